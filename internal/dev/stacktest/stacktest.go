// Package stacktest starts one real stack (Redis, placement, scheduler,
// daprd sidecars and apps) per test package, from TestMain:
//
//	func TestMain(m *testing.M) {
//		os.Exit(stacktest.Run(m, stacktest.Options{Apps: ...}))
//	}
//
// and tests reach it with stacktest.Stack(t). Everything runs on random free
// loopback ports in a temporary directory. With -short the stack is not
// started and every test that asks for it is skipped. When a test fails, the
// end of every process's log is printed and the run directory is kept; on
// SIGINT/SIGTERM everything is stopped before the test binary exits.
package stacktest

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/netns"
	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/toolchain"
)

// Options describe the stack of a test package.
type Options struct {
	Apps []stack.App
	// Secrets is the content of the run's secret store file; nil means
	// {"gemini-api-key": ""} (the offline model).
	Secrets map[string]string
	Secure  bool
	// LLMMaxConcurrent caps concurrent generate_response activities (0: none).
	LLMMaxConcurrent int
	// RedisPersist keeps Redis's data on disk (RDB and AOF), so that a
	// restarted Redis (Stack.Restart) comes back with it.
	RedisPersist bool
	// AfterTests, when set, runs once every test of the package has run,
	// with the stack still up: a check over the whole run (a secret in no
	// log, say) that no test's order can skip. Its error fails the run.
	AfterTests func(st *stack.Stack) error
	// Verbose copies every process's output to stderr as it happens
	// (also switched on by DACA_TEST_VERBOSE=1).
	Verbose bool
	// Cluster runs the stack on hosts of this machine (network namespaces;
	// root): every app of the system on each host (Apps is ignored), the
	// control plane in its highly available form on the first three, Redis
	// and sentry on one more, mTLS on (stack.Cluster).
	Cluster *Cluster
}

// Cluster is the layout of a package's cluster.
type Cluster struct {
	Prefix string // of its namespaces and links (netns.Create), unique per package
	Subnet string // e.g. 10.78.1: hosts .1, .2, …
	Hosts  int    // hosts with apps; default 3
	Env    []string
}

// Broker is the pub/sub broker of the package's stack: DACA_BROKER
// (stack.Brokers; make test runs the services' and gateway's end-to-end
// tests once more with rabbitmq), Redis by default.
func Broker() string {
	if b := os.Getenv("DACA_BROKER"); b != "" {
		return b
	}
	return stack.BrokerRedis
}

var (
	mu      sync.Mutex
	current *stack.Stack
	failed  bool
	lost    error // the first process of the stack that died unexpectedly
)

// Run starts the stack, runs the tests and stops the stack. It returns the
// exit code for os.Exit.
func Run(m *testing.M, opts Options) int {
	if !flag.Parsed() {
		flag.Parse()
	}
	if testing.Short() {
		return m.Run()
	}
	root, err := RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stacktest:", err)
		return 1
	}
	runDir, err := os.MkdirTemp("", "daca-stack-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "stacktest:", err)
		return 1
	}
	secrets := opts.Secrets
	if secrets == nil {
		secrets = map[string]string{contract.SecretLLMKey: ""}
	}
	secretsFile := filepath.Join(runDir, "secrets.json")
	b, _ := json.Marshal(secrets)
	if err := os.WriteFile(secretsFile, b, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "stacktest:", err)
		return 1
	}

	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	var out io.Writer
	if opts.Verbose || os.Getenv("DACA_TEST_VERBOSE") == "1" {
		out = os.Stderr
	}
	start := time.Now()
	cfg := stack.Config{
		Root:             root,
		RunDir:           runDir,
		SecretsFile:      secretsFile,
		Apps:             opts.Apps,
		Secure:           opts.Secure,
		LLMMaxConcurrent: opts.LLMMaxConcurrent,
		RedisPersist:     opts.RedisPersist,
		Broker:           Broker(),
		Out:              out,
		Progress:         os.Stderr,
	}
	if opts.Cluster != nil {
		net, err := clusterConfig(ctx, root, *opts.Cluster, &cfg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "stacktest: %v\n", err)
			return 1
		}
		defer net.Remove()
	}
	st, err := stack.Start(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "stacktest: starting the stack failed: %v\n", err)
		dumpDir(os.Stderr, filepath.Join(runDir, "logs"))
		fmt.Fprintf(os.Stderr, "stacktest: logs kept in %s\n", runDir)
		return 1
	}
	fmt.Fprintf(os.Stderr, "stacktest: stack ready in %s (broker %s, run dir %s)\n", time.Since(start).Round(time.Millisecond), Broker(), runDir)
	mu.Lock()
	current = st
	mu.Unlock()

	// Stop everything when the test binary is interrupted.
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "stacktest: interrupted; stopping the stack")
			st.Stop()
			os.Exit(130)
		case <-done:
		}
	}()
	// Report a process that dies during the tests at once.
	watchCtx, stopWatch := context.WithCancel(context.Background())
	go func() {
		for {
			err := st.Wait(watchCtx)
			if err == nil {
				return
			}
			fmt.Fprintf(os.Stderr, "stacktest: %v\n", err)
			mu.Lock()
			if lost == nil {
				lost = err
			}
			mu.Unlock()
		}
	}()

	code := m.Run()
	if opts.AfterTests != nil {
		if err := opts.AfterTests(st); err != nil {
			fmt.Fprintf(os.Stderr, "--- FAIL: after the tests: %v\n", err)
			code = 1
			mu.Lock()
			failed = true
			mu.Unlock()
		} else {
			fmt.Fprintln(os.Stderr, "stacktest: the check after the tests passed")
		}
	}
	stopWatch()
	close(done)
	mu.Lock()
	anyFailed := failed
	mu.Unlock()
	if code != 0 || anyFailed {
		DumpLogs(os.Stderr, st)
	}
	st.Stop()
	if code != 0 || anyFailed || os.Getenv("DACA_KEEP_RUN") != "" { // DACA_KEEP_RUN=1: keep the logs of a passing run too
		fmt.Fprintf(os.Stderr, "stacktest: logs kept in %s\n", runDir)
	} else {
		os.RemoveAll(runDir)
	}
	return code
}

// Stack returns the package's running stack; with -short (no stack) it
// skips the test. A failing test prints every process's log at the end.
func Stack(t testing.TB) *stack.Stack {
	t.Helper()
	mu.Lock()
	st := current
	mu.Unlock()
	if st == nil {
		t.Skip("end-to-end test: needs the real stack (run without -short, with a TestMain that calls stacktest.Run)")
	}
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			failed = true
			mu.Unlock()
		}
	})
	return st
}

// DumpLogs prints the end of every process's log.
func DumpLogs(w io.Writer, st *stack.Stack) {
	for _, p := range st.Processes() {
		dumpFile(w, p.Spec.Name, p.Spec.LogFile)
	}
}

func dumpDir(w io.Writer, dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		dumpFile(w, strings.TrimSuffix(e.Name(), ".log"), filepath.Join(dir, e.Name()))
	}
}

const dumpLines = 150

func dumpFile(w io.Writer, name, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	skipped := 0
	if len(lines) > dumpLines {
		skipped = len(lines) - dumpLines
		lines = lines[skipped:]
	}
	fmt.Fprintf(w, "===== %s (%s", name, path)
	if skipped > 0 {
		fmt.Fprintf(w, ", last %d lines", dumpLines)
	}
	fmt.Fprintln(w, ") =====")
	for _, l := range lines {
		fmt.Fprintf(w, "%-22s| %s\n", name, l)
	}
}

// RepoRoot finds the repository root: the nearest directory upwards from the
// working directory that holds tools/dapr/go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "tools", "dapr", "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (with tools/dapr/go.mod) not found above the working directory")
		}
		dir = parent
	}
}

// Lost returns the error of the first process of the stack that died
// unexpectedly during the tests, or nil. A test of several steps checks it
// between them, so that the rest fail at once instead of waiting on a
// process that is gone.
func Lost() error {
	mu.Lock()
	defer mu.Unlock()
	return lost
}

// clusterConfig makes the cluster's hosts and lays cfg out on them.
func clusterConfig(ctx context.Context, root string, c Cluster, cfg *stack.Config) (*netns.Network, error) {
	if c.Hosts == 0 {
		c.Hosts = 3
	}
	bins, err := toolchain.EnsureSentry(ctx, root, os.Stderr)
	if err != nil {
		return nil, err
	}
	net, err := netns.Create(c.Prefix, c.Subnet, c.Hosts+1)
	if err != nil {
		return nil, err
	}
	var hosts []string
	for _, h := range net.Hosts[:c.Hosts] {
		hosts = append(hosts, h.Name)
	}
	cfg.Bins = &bins
	cfg.Cluster = &stack.Cluster{Net: net, ControlPlane: hosts[:3], Infra: net.Hosts[c.Hosts].Name, Sentry: bins.Sentry}
	cfg.Apps = stack.ClusterApps(hosts, c.Env...)
	return net, nil
}
