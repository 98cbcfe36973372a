// Package proc starts and supervises the child processes of a stack: each in
// its own process group, its output prefixed with its name on a shared
// terminal writer and copied to a log file, the last lines kept for error
// reports, and stopped with SIGTERM then SIGKILL.
package proc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Spec describes a process to start.
type Spec struct {
	Name      string    // short name used as log prefix and log file name
	Path      string    // executable
	Args      []string  // arguments, without the executable
	Env       []string  // full environment (nil: inherit nothing but PATH and HOME)
	Dir       string    // working directory
	LogFile   string    // where the output is written; required
	AppendLog bool      // append to LogFile (a process started again) instead of truncating it
	Out       io.Writer // terminal writer for prefixed lines; nil: none
}

// Process is a started child process.
type Process struct {
	Spec Spec

	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit error, valid after done is closed

	mu       sync.Mutex
	tail     []string // ring of the last output lines
	stopping bool
	copyDone chan struct{}
	logFile  *os.File
}

const tailLines = 40

// Start starts the process. The process is killed if the calling program dies
// (Linux parent-death signal), so no child outlives a crashed launcher or an
// interrupted test binary.
func Start(s Spec) (*Process, error) {
	if s.LogFile == "" {
		return nil, errors.New("proc: LogFile is required")
	}
	if err := os.MkdirAll(filepath.Dir(s.LogFile), 0o755); err != nil {
		return nil, err
	}
	mode := os.O_TRUNC
	if s.AppendLog {
		mode = os.O_APPEND
	}
	lf, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|mode, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.Path, s.Args...)
	cmd.Dir = s.Dir
	cmd.Env = s.Env
	if cmd.Env == nil {
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	pr, pw, err := os.Pipe()
	if err != nil {
		lf.Close()
		return nil, err
	}
	cmd.Stdout = pw
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		lf.Close()
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	pw.Close()
	p := &Process{Spec: s, cmd: cmd, done: make(chan struct{}), copyDone: make(chan struct{}), logFile: lf}
	go p.copy(pr)
	go func() {
		err := cmd.Wait()
		<-p.copyDone
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *Process) copy(r io.ReadCloser) {
	defer close(p.copyDone)
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		p.logFile.WriteString(line + "\n")
		p.mu.Lock()
		if len(p.tail) == tailLines {
			copy(p.tail, p.tail[1:])
			p.tail = p.tail[:tailLines-1]
		}
		p.tail = append(p.tail, line)
		p.mu.Unlock()
		if p.Spec.Out != nil {
			fmt.Fprintf(p.Spec.Out, "%-22s| %s\n", p.Spec.Name, line)
		}
	}
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited and its output is drained.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err returns the exit error once Done is closed.
func (p *Process) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Stopping reports whether Stop was called, so an exit is expected.
func (p *Process) Stopping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopping
}

// Tail returns the last lines the process printed.
func (p *Process) Tail() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.tail...)
}

// Stop sends SIGTERM to the process group and waits up to grace for it to
// exit, then kills the group. It returns when the process is gone.
func (p *Process) Stop(grace time.Duration) {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	// Anything left in the group (a grandchild) goes too.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// ExpectExit marks an exit the caller is about to provoke (a crash test's
// failpoint) as expected, so that it is not reported as unexpected.
func (p *Process) ExpectExit() {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
}

// Kill kills the process group at once (used by crash tests).
func (p *Process) Kill() {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// ExitError describes a process that exited while it should have run.
type ExitError struct {
	Name    string
	Err     error
	LogFile string
	Tail    []string
}

func (e *ExitError) Error() string {
	var b strings.Builder
	status := "exited"
	if e.Err != nil {
		status = e.Err.Error()
	}
	fmt.Fprintf(&b, "%s stopped unexpectedly (%s); last lines of %s:\n", e.Name, status, e.LogFile)
	for _, l := range e.Tail {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// Exited builds the ExitError for a process that has exited.
func (p *Process) Exited() *ExitError {
	return &ExitError{Name: p.Spec.Name, Err: p.Err(), LogFile: p.Spec.LogFile, Tail: p.Tail()}
}
