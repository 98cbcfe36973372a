// Package layout checks the repository's shape, which the compiler does not:
// no executable is tracked, the gateway never depends on a service's code,
// no app depends on the development tooling, and the names that travel
// between the apps are spelled only in the contract package. It runs in
// `go test -short` too: it needs only git and the go command.
package layout

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/daca-go/daca"

func root(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestNoExecutableTracked: build outputs are never committed (a 26 MB binary
// once was). A tracked file may be executable only as a script with a #!
// line; no tracked file may be a compiled program (ELF, Mach-O, PE, wasm).
func TestNoExecutableTracked(t *testing.T) {
	dir := root(t)
	cmd := exec.Command("git", "ls-files", "-s", "-z")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): nothing to check", err)
	}
	magics := [][]byte{{0x7f, 'E', 'L', 'F'}, {0xcf, 0xfa, 0xed, 0xfe}, {0xfe, 0xed, 0xfa, 0xcf}, {0xca, 0xfe, 0xba, 0xbe}, []byte("MZ"), []byte("\x00asm")}
	n := 0
	for _, rec := range bytes.Split(out, []byte{0}) {
		if len(rec) == 0 {
			continue
		}
		meta, path, _ := strings.Cut(string(rec), "\t")
		f, err := os.Open(filepath.Join(dir, path))
		if err != nil {
			continue // deleted in the work tree
		}
		head := make([]byte, 4)
		k, _ := f.Read(head)
		f.Close()
		head = head[:k]
		n++
		for _, m := range magics {
			if bytes.HasPrefix(head, m) {
				t.Errorf("%s is a compiled program: build outputs are never committed (git rm --cached it; .gitignore)", path)
			}
		}
		if strings.HasPrefix(meta, "100755") && !bytes.HasPrefix(head, []byte("#!")) {
			t.Errorf("%s is executable but not a script (no #! line)", path)
		}
	}
	if n == 0 {
		t.Fatal("git ls-files listed no files")
	}
}

// deps lists the module's packages that pkgs depend on (not their tests).
func deps(t *testing.T, pkgs ...string) []string {
	t.Helper()
	args := append([]string{"list", "-deps", "-f", "{{.ImportPath}}"}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %v: %v", pkgs, err)
	}
	var own []string
	for _, p := range strings.Fields(string(out)) {
		if rel, ok := strings.CutPrefix(p, module+"/"); ok {
			own = append(own, rel)
		}
	}
	return own
}

func TestDependencies(t *testing.T) {
	tests := []struct {
		name      string
		pkgs      []string
		forbidden []string // path prefixes
	}{
		{"the gateway never imports a service's code", []string{"./gateway/...", "./graph/..."}, []string{"services/"}},
		// graph declares the ports it needs (graph/ports.go); gateway/
		// implements and wires them: the dependency points one way.
		{"graph imports nothing under gateway/", []string{"./graph/..."}, []string{"gateway"}},
		{"chat-service never imports agent-memory-service's code", []string{"./services/chat/..."}, []string{"services/memory", "gateway", "graph"}},
		{"agent-memory-service never imports chat-service's code", []string{"./services/memory/..."}, []string{"services/chat", "gateway", "graph"}},
		{"no app imports the development tooling", []string{"./gateway", "./services/chat", "./services/memory"}, []string{"internal/dev/"}},
		{"the contract imports only the error codes", []string{"./internal/contract"}, []string{"gateway", "graph", "services", "internal/dev", "internal/llm", "internal/service", "internal/httpx"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, d := range deps(t, tt.pkgs...) {
				for _, f := range tt.forbidden {
					if strings.HasPrefix(d, f) {
						t.Errorf("%v depends on %s", tt.pkgs, d)
					}
				}
			}
		})
	}
}

// TestRoutesDefinedOnce: a service's routes are spelled only in
// internal/api (each service's typed client and its Route values, which the
// services mount). A Go string literal elsewhere that starts like one of
// them ("memories/"+id) is a second spelling waiting to drift.
func TestRoutesDefinedOnce(t *testing.T) {
	prefixes := []string{"memories/", "conversations/", "owners/", "users/", "chat/", "/memories", "/conversations", "/owners", "/users/", "/chat/async", "approvals/", "/approvals"}
	eachLiteral(t, filepath.Join("internal", "api"), func(pos token.Position, s string) {
		for _, p := range prefixes {
			if strings.HasPrefix(s, p) {
				t.Errorf("%s: %q: a route of a service; use internal/api's Route", pos, s)
			}
		}
	})
}

// eachLiteral calls f with every Go string literal of the module's own
// code outside skip (tests, generated code and the tool modules left out).
func eachLiteral(t *testing.T, skip string, f func(token.Position, string)) {
	t.Helper()
	dir := root(t)
	fset := token.NewFileSet()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			switch rel {
			case ".git", ".bin", ".run", "tools", "deploy", "node_modules", skip:
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || strings.HasSuffix(path, "generated.go") {
			return nil
		}
		file, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(file, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil {
					f(fset.Position(lit.Pos()), s)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// crossApp are the names that travel between the apps. Outside
// internal/contract a Go string literal equal to one of them is a second
// definition waiting to drift; use the contract's constant.
var crossApp = []string{
	"chat-service", "agent-memory-service", "pubsub", "gateway-pubsub", "statestore", "gateway-state", "secretstore",
	"gemini-api-key", "gateway-jwt-secret", "conversations", "memory-updates", "ConversationUpdated", "Idempotency-Key",
	"cloudevent.id", "tool-server", "tool-server-token", "X-Tool-Token",
}

func TestCrossAppNamesDefinedOnce(t *testing.T) {
	want := map[string]bool{}
	for _, n := range crossApp {
		want[n] = true
	}
	eachLiteral(t, filepath.Join("internal", "contract"), func(pos token.Position, s string) {
		if want[s] {
			t.Errorf("%s: %q: use the constant of internal/contract", pos, s)
		}
	})
}
