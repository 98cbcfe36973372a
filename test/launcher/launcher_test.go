// Package launcher tests `daca up` (what `make run` runs) as a user runs it:
// it prints the status table when everything is ready, Ctrl-C stops every
// process it started, a taken port fails fast naming the port, and a process
// that dies is reported and stops the rest.
package launcher

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

var (
	buildOnce sync.Once
	daca      string
	buildErr  error
)

func binary(t *testing.T) (root, bin string) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test of the launcher (real Dapr, Redis and apps)")
	}
	root, err := stacktest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "daca-launcher-")
		if err != nil {
			buildErr = err
			return
		}
		daca = filepath.Join(dir, "daca")
		out, err := exec.Command("go", "build", "-o", daca, filepath.Join(root, "cmd", "daca")).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return root, daca
}

// freeEnv sets every port of daca up to a free one.
func freeEnv(t *testing.T) []string {
	t.Helper()
	var env []string
	for _, k := range []string{"REDIS_PORT", "PLACEMENT_PORT", "SCHEDULER_PORT",
		"MEMORY_PORT", "MEMORY_DAPR_HTTP_PORT", "MEMORY_DAPR_GRPC_PORT",
		"CHAT_PORT", "CHAT_DAPR_HTTP_PORT", "CHAT_DAPR_GRPC_PORT",
		"GATEWAY_PORT", "GATEWAY_DAPR_HTTP_PORT", "GATEWAY_DAPR_GRPC_PORT"} {
		p, err := stack.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, k+"="+strconv.Itoa(p))
	}
	return env
}

type run struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan error
}

func start(t *testing.T, extraEnv ...string) *run {
	t.Helper()
	root, bin := binary(t)
	cmd := exec.Command(bin, "up", "--root", root, "--run-dir", t.TempDir())
	cmd.Env = append(append(os.Environ(), freeEnv(t)...), extraEnv...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &run{cmd: cmd, done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			r.mu.Lock()
			r.out.WriteString(sc.Text() + "\n")
			r.mu.Unlock()
		}
	}()
	go func() { err := cmd.Wait(); pw.Close(); r.done <- err }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("daca up output:\n%s", r.output())
		}
	})
	return r
}

func (r *run) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

func (r *run) waitFor(t *testing.T, what string, timeout time.Duration) {
	t.Helper()
	testkit.WaitFor(t, timeout, what, func() error {
		if strings.Contains(r.output(), what) {
			return nil
		}
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("daca up exited (%v) before printing %q", err, what)
		default:
		}
		return fmt.Errorf("not printed yet")
	})
}

var row = regexp.MustCompile(`(?m)^(\S+)\s+(\d+)\s+.*\s(yes|NO)$`)

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestUpPrintsStatusAndCtrlCLeavesNothing(t *testing.T) {
	r := start(t)
	r.waitFor(t, "Press Ctrl-C to stop everything.", 3*time.Minute)
	rows := row.FindAllStringSubmatch(r.output(), -1)
	names := map[string]int{}
	for _, m := range rows {
		pid, _ := strconv.Atoi(m[2])
		names[m[1]] = pid
		if m[3] != "yes" {
			t.Errorf("%s not ready", m[1])
		}
	}
	for _, want := range []string{"redis", "placement", "scheduler", "chat-service", "chat-service-dapr", "agent-memory-service", "agent-memory-service-dapr"} {
		if names[want] == 0 {
			t.Fatalf("status table lacks %s:\n%s", want, r.output())
		}
	}
	if err := r.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("daca up after Ctrl-C: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("daca up did not stop within 60s of Ctrl-C")
	}
	for name, pid := range names {
		if alive(pid) {
			t.Errorf("%s (pid %d) still runs after Ctrl-C", name, pid)
		}
	}
	if !strings.Contains(r.output(), "nothing of this run is left running") {
		t.Fatalf("no stop message:\n%s", r.output())
	}
}

func TestUpFailsFastOnTakenPort(t *testing.T) {
	l, err := stack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := netListen(l)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := start(t, "CHAT_DAPR_HTTP_PORT="+strconv.Itoa(l))
	select {
	case err := <-r.done:
		if err == nil {
			t.Fatal("daca up succeeded with a taken port")
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("daca up did not fail fast")
	}
	want := fmt.Sprintf("port %d (chat-service sidecar HTTP) is already in use", l)
	if !strings.Contains(r.output(), want) {
		t.Fatalf("output does not name the port (%q):\n%s", want, r.output())
	}
}

func TestUpReportsADeadProcess(t *testing.T) {
	r := start(t)
	r.waitFor(t, "Press Ctrl-C to stop everything.", 3*time.Minute)
	var chatPid int
	for _, m := range row.FindAllStringSubmatch(r.output(), -1) {
		if m[1] == "chat-service" {
			chatPid, _ = strconv.Atoi(m[2])
		}
	}
	if chatPid == 0 {
		t.Fatal("no chat-service in the table")
	}
	syscall.Kill(chatPid, syscall.SIGKILL)
	select {
	case err := <-r.done:
		if err == nil {
			t.Fatal("daca up exited 0 after a process died")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("daca up did not notice the dead process")
	}
	if !strings.Contains(r.output(), "chat-service stopped unexpectedly") {
		t.Fatalf("the dead process is not named:\n%s", r.output())
	}
	for _, m := range row.FindAllStringSubmatch(r.output(), -1) {
		if pid, _ := strconv.Atoi(m[2]); alive(pid) {
			t.Errorf("%s (pid %d) still runs", m[1], pid)
		}
	}
}

func netListen(port int) (io.Closer, error) {
	return net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
}
