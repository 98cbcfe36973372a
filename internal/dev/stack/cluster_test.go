package stack

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestClusterConfigs: a cluster's sidecar runs with components/config.yaml
// and its app's access policy from the Kubernetes manifests — the same
// policy, from the one file, with the sidecar's own variables left to it.
func TestClusterConfigs(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	base, err := os.ReadFile(filepath.Join(root, "components", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), base, 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := clusterConfigs(root, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range System {
		b, err := os.ReadFile(files[d.ID])
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), string(base[:len(base)-1])) || !strings.Contains(string(b), "${DACA_ALLOWED_SECRETS}") {
			t.Fatalf("%s: not components/config.yaml with the policy appended:\n%s", d.ID, b)
		}
		var cfg struct {
			Spec struct {
				AccessControl struct {
					DefaultAction string `yaml:"defaultAction"`
					TrustDomain   string `yaml:"trustDomain"`
					Policies      []struct {
						AppID     string `yaml:"appId"`
						Namespace string
					}
				} `yaml:"accessControl"`
				Workflow any
			}
		}
		if err := yaml.Unmarshal(b, &cfg); err != nil {
			t.Fatalf("%s: %v\n%s", d.ID, err, b)
		}
		ac := cfg.Spec.AccessControl
		if ac.DefaultAction != "deny" || ac.TrustDomain != "public" || cfg.Spec.Workflow == nil {
			t.Fatalf("%s: %+v", d.ID, cfg.Spec)
		}
		for _, p := range ac.Policies {
			if p.Namespace != clusterNamespace {
				t.Fatalf("%s: a policy for %s in namespace %q; the cluster's apps are in %q", d.ID, p.AppID, p.Namespace, clusterNamespace)
			}
		}
	}
}
