package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/daca-go/daca/internal/dev/stack"
)

// runFile is the part of the Dapr CLI's Multi-App Run file (its
// pkg/runfileconfig, yaml tags as in dapr/cli v1.16.5) that dapr.yaml uses.
// The CLI's module itself cannot be built here: it needs
// components-contrib v1.16.3, which the module proxy refuses.
type runFile struct {
	Version int `yaml:"version"`
	Common  struct {
		ResourcesPaths []string          `yaml:"resourcesPaths"`
		AppProtocol    string            `yaml:"appProtocol"`
		Env            map[string]string `yaml:"env"`
	} `yaml:"common"`
	Apps []struct {
		AppID              string   `yaml:"appID"`
		AppDirPath         string   `yaml:"appDirPath"`
		AppPort            int      `yaml:"appPort"`
		DaprHTTPPort       int      `yaml:"daprHTTPPort"`
		DaprGRPCPort       int      `yaml:"daprGRPCPort"`
		AppHealthCheckPath string   `yaml:"appHealthCheckPath"`
		ConfigFilePath     string   `yaml:"configFilePath"`
		Command            []string `yaml:"command"`
	} `yaml:"apps"`
}

type daprConfig struct {
	Kind string `yaml:"kind"`
	Spec struct {
		Tracing struct {
			SamplingRate string `yaml:"samplingRate"`
		} `yaml:"tracing"`
		Secrets struct {
			Scopes []struct {
				StoreName      string   `yaml:"storeName"`
				DefaultAccess  string   `yaml:"defaultAccess"`
				AllowedSecrets []string `yaml:"allowedSecrets"`
			} `yaml:"scopes"`
		} `yaml:"secrets"`
	} `yaml:"spec"`
}

func decodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(false) // the Configuration has more than this test reads
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestRunFileMatchesUp: `dapr run -f .` (the repository's dapr.yaml)
// starts what `make run` starts — the same app ids, app and sidecar ports,
// health paths, resources and secret allow-lists — field by field against
// stack.System, the launcher's one definition of the apps.
func TestRunFileMatchesUp(t *testing.T) {
	root := filepath.Join("..", "..")
	b, err := os.ReadFile(filepath.Join(root, "dapr.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf runFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true) // a misspelt key would be ignored by the CLI: refuse it here
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("dapr.yaml: %v", err)
	}
	if rf.Version != 1 || !slices.Equal(rf.Common.ResourcesPaths, []string{"./components"}) || rf.Common.AppProtocol != "http" {
		t.Fatalf("dapr.yaml common: version %d, resources %v, protocol %q", rf.Version, rf.Common.ResourcesPaths, rf.Common.AppProtocol)
	}
	var base struct { // its secret allow-list is a ${variable} the launcher fills in
		Spec struct {
			Tracing struct {
				SamplingRate string `yaml:"samplingRate"`
			} `yaml:"tracing"`
		} `yaml:"spec"`
	}
	decodeStrict(t, filepath.Join(root, "components", "config.yaml"), &base)
	if len(rf.Apps) != len(stack.System) {
		t.Fatalf("dapr.yaml has %d apps; make run starts %d", len(rf.Apps), len(stack.System))
	}
	for i, d := range stack.System {
		a := rf.Apps[i] // same start order
		if a.AppID != d.ID || a.AppDirPath != "./"+d.Dir+"/" || a.AppPort != d.Port || a.DaprHTTPPort != d.HTTPPort ||
			a.DaprGRPCPort != d.GRPCPort || a.AppHealthCheckPath != d.Health || !slices.Equal(a.Command, []string{"go", "run", "."}) {
			t.Fatalf("dapr.yaml app %d: %+v; make run: %+v", i, a, d)
		}
		if !hasMainPackage(t, filepath.Join(root, d.Dir)) {
			t.Fatalf("%s: no main package in %s", d.ID, d.Dir)
		}
		var c daprConfig
		decodeStrict(t, filepath.Join(root, a.ConfigFilePath), &c)
		scope := c.Spec.Secrets.Scopes
		if c.Kind != "Configuration" || c.Spec.Tracing != base.Spec.Tracing || len(scope) != 1 || scope[0].StoreName != "secretstore" ||
			scope[0].DefaultAccess != "deny" || !slices.Equal(scope[0].AllowedSecrets, d.Secrets) {
			t.Fatalf("%s: %s: %+v; want tracing as components/config.yaml and secrets %v only", d.ID, a.ConfigFilePath, c, d.Secrets)
		}
	}
}

func hasMainPackage(t *testing.T, dir string) bool {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if bytes.HasPrefix(bytes.TrimLeft(b, "/ \n\t"), []byte("package main")) || bytes.Contains(b, []byte("\npackage main\n")) {
			return true
		}
	}
	return false
}
