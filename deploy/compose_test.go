package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"
)

// The apps as `make run` runs them (cmd/daca/up.go): app id → app port,
// the secrets it may read, and whether its port is published.
var apps = map[string]struct {
	port    string
	secrets string
	public  bool
}{
	"agent-memory-service": {"8001", `["gemini-api-key"]`, false},
	"tool-server":          {"8020", `["tool-server-token"]`, false},
	"chat-service":         {"8010", `["gemini-api-key", "tool-server-token"]`, false},
	"gateway":              {"8080", `["gateway-jwt-secret"]`, true},
}

func root(t *testing.T) string {
	t.Helper()
	abs, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root(t), "docker-compose.yml")},
		cli.WithWorkingDirectory(root(t)),
		cli.WithEnv([]string{"DAPR_API_TOKEN=test-dapr-token", "APP_API_TOKEN=test-app-token"}),
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("docker-compose.yml is not valid: %v", err)
	}
	return p
}

func flag(cmd []string, name string) string {
	for i, a := range cmd {
		if a == name && i+1 < len(cmd) {
			return cmd[i+1]
		}
	}
	return ""
}

func TestComposeAppsHaveMatchingSidecars(t *testing.T) {
	p := loadCompose(t)
	for id, want := range apps {
		t.Run(id, func(t *testing.T) {
			app, ok := p.Services[id]
			if !ok {
				t.Fatalf("no service %s", id)
			}
			if app.Build == nil || app.HealthCheck == nil {
				t.Fatalf("%s: needs a build and a health check", id)
			}
			if got := app.Environment["APP_PORT"]; got == nil || *got != want.port {
				t.Fatalf("%s: APP_PORT %v; want %s", id, got, want.port)
			}
			for _, k := range []string{"DAPR_API_TOKEN", "APP_API_TOKEN"} {
				if v := app.Environment[k]; v == nil || *v == "" {
					t.Fatalf("%s: %s not set", id, k)
				}
			}
			sc, ok := p.Services[id+"-dapr"]
			if !ok {
				t.Fatalf("no sidecar %s-dapr", id)
			}
			if sc.NetworkMode != "service:"+id {
				t.Fatalf("sidecar network_mode %q; want service:%s", sc.NetworkMode, id)
			}
			if !strings.HasPrefix(sc.Image, "daprio/daprd:1.18.2") {
				t.Fatalf("sidecar image %q", sc.Image)
			}
			if got := flag(sc.Command, "--app-id"); got != id {
				t.Fatalf("sidecar --app-id %q; want %s", got, id)
			}
			if got := flag(sc.Command, "--app-port"); got != want.port {
				t.Fatalf("sidecar --app-port %q; want %s", got, want.port)
			}
			if flag(sc.Command, "--config") != "/components/config.yaml" || flag(sc.Command, "--resources-path") != "/components" {
				t.Fatalf("sidecar does not load the components and configuration: %v", sc.Command)
			}
			if got := sc.Environment["DACA_ALLOWED_SECRETS"]; got == nil || *got != want.secrets {
				t.Fatalf("sidecar secret scope %v; want %s", got, want.secrets)
			}
			for _, k := range []string{"DAPR_API_TOKEN", "APP_API_TOKEN", "REDIS_HOST", "SECRETS_FILE", "DACA_NAMERESOLUTION_DB"} {
				if v := sc.Environment[k]; v == nil || *v == "" {
					t.Fatalf("sidecar %s not set", k)
				}
			}
			var components bool
			for _, v := range sc.Volumes {
				if v.Target == "/components" {
					components = v.ReadOnly
				}
			}
			if !components {
				t.Fatal("components are not mounted read-only at /components")
			}
			if public := len(app.Ports) > 0; public != want.public {
				t.Fatalf("%s publishes ports %v; want published=%v", id, app.Ports, want.public)
			}
		})
	}
	for name, s := range p.Services {
		if _, isApp := apps[name]; !isApp && len(s.Ports) > 0 {
			t.Errorf("%s publishes ports %v; only the gateway may", name, s.Ports)
		}
	}
}

func TestComposeMountsExist(t *testing.T) {
	p := loadCompose(t)
	r := root(t)
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			rel, err := filepath.Rel(r, v.Source)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s mounts %s from outside the repository", name, v.Source)
				continue
			}
			if rel == "secrets.json" {
				// Created by make run (or copied by hand) from the example; never committed.
				if _, err := os.Stat(filepath.Join(r, "secrets.example.json")); err != nil {
					t.Errorf("secrets.example.json is missing")
				}
				out, _ := exec.Command("git", "-C", r, "check-ignore", "secrets.json").Output()
				if strings.TrimSpace(string(out)) != "secrets.json" {
					t.Errorf("secrets.json is not gitignored")
				}
				if !v.ReadOnly {
					t.Errorf("%s mounts secrets.json writable", name)
				}
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s, which is not in the repository", name, rel)
			}
		}
	}
}

var secretish = regexp.MustCompile(`(?i)(TOKEN|SECRET|PASSWORD|API_?KEY)`)

// No secret value is written in the file: every secret-looking variable is a
// reference to the environment.
func TestComposeHasNoInlineSecrets(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root(t), "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if s, ok := e.(string); ok && secretish.MatchString(k) && !strings.HasPrefix(strings.TrimSpace(s), "${") && !strings.HasSuffix(k, "ALLOWED_SECRETS") && !strings.HasSuffix(k, "_FILE") {
					t.Errorf("%s.%s holds an inline value; use ${VAR}", path, k)
				}
				walk(path+"."+k, e)
			}
		case []any:
			for _, e := range x {
				walk(path, e)
			}
		}
	}
	walk("", doc)
	if strings.Contains(string(b), "AIza") || strings.Contains(string(b), "sk-") {
		t.Error("docker-compose.yml contains something shaped like an API key")
	}
	// And the Docker build context never takes secrets.json.
	di, err := os.ReadFile(filepath.Join(root(t), ".dockerignore"))
	if err != nil || !slices.Contains(strings.Fields(string(di)), "secrets.json") {
		t.Error(".dockerignore must exclude secrets.json")
	}
}

// TestComposeMCPServer: compose's MCPServer (mounted over the components'
// one in chat-service's sidecar) differs from make run's only in the tool
// server's address.
func TestComposeMCPServer(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root(t), "deploy", "compose", "mcpserver-tools.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	checkMCPServer(t, got, "http://tool-server:8020/mcp", true)
	mounted := false
	for _, v := range loadCompose(t).Services["chat-service-dapr"].Volumes {
		if v.Target == "/components/mcpserver-tools.yaml" && v.Source != "" && strings.HasSuffix(v.Source, "deploy/compose/mcpserver-tools.yaml") {
			mounted = true
		}
	}
	if !mounted {
		t.Fatal("chat-service's sidecar does not mount deploy/compose/mcpserver-tools.yaml over the components' one")
	}
}
