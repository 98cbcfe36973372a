// Package toolchain builds the Dapr runtime binaries (daprd, placement,
// scheduler; and sentry, for the cluster, on demand) from the Go module
// proxy, once, into .bin/dapr-<version>/.
//
// The build runs inside the tools/dapr module, whose go.sum pins the checksum
// of every module: a tampered module fails the build. A stamp file records a
// hash of the module files, so a later call returns at once unless they
// changed. A file lock makes concurrent callers (parallel test packages) wait
// for one build instead of racing.
package toolchain

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DaprVersion is the Dapr runtime version the project runs on.
const DaprVersion = "1.18.2"

// daprCommit is the git commit of the v1.18.2 tag (reported by daprd --build-info),
// as the module proxy's origin record of github.com/dapr/dapr@v1.18.2 gives it.
const daprCommit = "d2dd3747145e38e4d85db4714e26d7569c9c37db"

// Bins are the paths of the Dapr binaries.
type Bins struct {
	Dir       string
	Daprd     string
	Placement string
	Scheduler string
	Sentry    string // built by EnsureSentry only
}

// BinsIn returns the binary paths under root/.bin.
func BinsIn(root string) Bins {
	dir := filepath.Join(root, ".bin", "dapr-"+DaprVersion)
	return Bins{
		Dir:       dir,
		Daprd:     filepath.Join(dir, "daprd"),
		Placement: filepath.Join(dir, "placement"),
		Scheduler: filepath.Join(dir, "scheduler"),
		Sentry:    filepath.Join(dir, "sentry"),
	}
}

// inputs are the files whose content decides what is built.
var inputs = []string{"go.mod", "go.sum", "cmd/daprd/main.go"}

// EnsureDapr makes sure the Dapr binaries exist for the module files as they
// are now, building them when needed. Progress goes to out.
func EnsureDapr(ctx context.Context, root string, out io.Writer) (Bins, error) {
	bins := BinsIn(root)
	modDir := filepath.Join(root, "tools", "dapr")
	want, err := inputsHash(modDir, inputs...)
	if err != nil {
		return bins, err
	}
	stamp := filepath.Join(bins.Dir, ".stamp")
	if upToDate(stamp, want, bins.Daprd, bins.Placement, bins.Scheduler) {
		now := time.Now()
		_ = os.Chtimes(stamp, now, now) // so make sees the stamp as newer than its inputs
		return bins, nil
	}
	if err := os.MkdirAll(bins.Dir, 0o755); err != nil {
		return bins, err
	}
	unlock, err := lock(ctx, bins.Dir+".lock", out)
	if err != nil {
		return bins, err
	}
	defer unlock()
	if upToDate(stamp, want, bins.Daprd, bins.Placement, bins.Scheduler) { // another process built it while we waited
		return bins, nil
	}
	if err := build(ctx, modDir, out, []target{
		{"daprd", "./cmd/daprd", bins.Daprd},
		{"placement", "github.com/dapr/dapr/cmd/placement", bins.Placement},
		{"scheduler", "github.com/dapr/dapr/cmd/scheduler", bins.Scheduler},
	}); err != nil {
		return bins, err
	}
	if err := os.WriteFile(stamp, []byte(want+"\n"), 0o644); err != nil {
		return bins, err
	}
	return bins, nil
}

// EnsureSentry makes sure Dapr's sentry (the certificate authority of
// mTLS) exists beside the other binaries, building it from tools/sentry
// when needed: only the cluster runs it.
func EnsureSentry(ctx context.Context, root string, out io.Writer) (Bins, error) {
	bins, err := EnsureDapr(ctx, root, out)
	if err != nil {
		return bins, err
	}
	modDir := filepath.Join(root, "tools", "sentry")
	want, err := inputsHash(modDir, "go.mod", "go.sum")
	if err != nil {
		return bins, err
	}
	stamp := filepath.Join(bins.Dir, ".stamp-sentry")
	if upToDate(stamp, want, bins.Sentry) {
		return bins, nil
	}
	unlock, err := lock(ctx, bins.Dir+".lock", out)
	if err != nil {
		return bins, err
	}
	defer unlock()
	if upToDate(stamp, want, bins.Sentry) {
		return bins, nil
	}
	if err := build(ctx, modDir, out, []target{{"sentry", "github.com/dapr/dapr/cmd/sentry", bins.Sentry}}); err != nil {
		return bins, err
	}
	return bins, os.WriteFile(stamp, []byte(want+"\n"), 0o644)
}

func upToDate(stamp, want string, files ...string) bool {
	got, err := os.ReadFile(stamp)
	if err != nil || strings.TrimSpace(string(got)) != want {
		return false
	}
	for _, f := range files {
		if st, err := os.Stat(f); err != nil || st.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

func inputsHash(modDir string, files ...string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "dapr %s\n", DaprVersion)
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(modDir, f))
		if err != nil {
			return "", fmt.Errorf("toolchain: %w (is this the daca repository root?)", err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func lock(ctx context.Context, path string, out io.Writer) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	said := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		if !said {
			fmt.Fprintln(out, "dapr: another process is building the Dapr binaries; waiting for it")
			said = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

type target struct{ name, pkg, out string }

func build(ctx context.Context, modDir string, out io.Writer, targets []target) error {
	ldflags := strings.Join([]string{
		"-s", "-w",
		"-X github.com/dapr/dapr/pkg/buildinfo.version=" + DaprVersion,
		"-X github.com/dapr/dapr/pkg/buildinfo.gitversion=v" + DaprVersion,
		"-X github.com/dapr/dapr/pkg/buildinfo.gitcommit=" + daprCommit,
		"-X github.com/dapr/kit/logger.DaprVersion=" + DaprVersion,
	}, " ")
	for i, t := range targets {
		note := ""
		if i == 0 && t.name == "daprd" {
			note = " — first time only, about 5 minutes"
		}
		fmt.Fprintf(out, "dapr: building %s %s%s\n", t.name, DaprVersion, note)
		start := time.Now()
		tmp := t.out + ".tmp"
		cmd := exec.CommandContext(ctx, "go", "build", "-mod=readonly", "-trimpath",
			"-tags", "stablecomponents", "-ldflags", ldflags, "-o", tmp, t.pkg)
		cmd.Dir = modDir
		// The module's go.sum is authoritative: verify every download against it
		// and never write to it.
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOWORK=off")
		cmd.Stdout = out
		cmd.Stderr = out
		if err := cmd.Run(); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("dapr: building %s failed: %w", t.name, err)
		}
		if err := os.Rename(tmp, t.out); err != nil {
			return err
		}
		fmt.Fprintf(out, "dapr: built %s in %s\n", t.out, time.Since(start).Round(time.Second))
	}
	return nil
}
