package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/daca-go/daca/internal/dev/toolchain"
)

// baseline is the source tree of an older revision of this repository, so
// that `daca bench -baseline` measures the old code beside today's in one
// run: on a shared machine, figures of two runs (or days) differ by more
// than what is being compared.
type baseline struct {
	rev string // short commit
	dir string // its tree, under .bin (kept: Go and the Dapr build cache it)
}

// baselineApp is the stack's name of the baseline's gateway.
const baselineApp = "gateway-baseline"

// openBaseline extracts revision rev of the repository at root into
// root/.bin/baseline-<commit>, unless an earlier run did. The working tree
// is not touched.
func openBaseline(ctx context.Context, root, rev string) (*baseline, error) {
	out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short", "--verify", rev+"^{commit}").Output()
	if err != nil {
		return nil, fmt.Errorf("bench: -baseline %s: not a commit of this repository (a shallow clone lacks old commits): %w", rev, err)
	}
	b := &baseline{rev: strings.TrimSpace(string(out))}
	b.dir = filepath.Join(root, ".bin", "baseline-"+b.rev)
	done := filepath.Join(b.dir, ".extracted")
	if _, err := os.Stat(done); err == nil {
		return b, nil
	}
	if err := os.RemoveAll(b.dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return nil, err
	}
	archive := exec.CommandContext(ctx, "sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, b.rev, b.dir)
	if out, err := archive.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bench: extracting %s: %w\n%s", b.rev, err, out)
	}
	return b, os.WriteFile(done, nil, 0o644)
}

// gateway builds the baseline's gateway into dir and returns the binary.
func (b *baseline) gateway(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "gateway-"+b.rev)
	fmt.Printf("bench: building the gateway of %s (the baseline)\n", b.rev)
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./gateway")
	build.Dir = b.dir
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: building the gateway of %s: %w\n%s", b.rev, err, out)
	}
	return bin, nil
}

// dapr builds the Dapr binaries of the baseline's own toolchain (its Dapr
// release, with whatever patches it applied) with its own `daca dapr`,
// once (the first build takes minutes), and returns them.
func (b *baseline) dapr(ctx context.Context) (toolchain.Bins, error) {
	fmt.Printf("bench: the Dapr binaries of %s (the baseline; the first build takes several minutes)\n", b.rev)
	cmd := exec.CommandContext(ctx, "go", "run", "./cmd/daca", "dapr")
	cmd.Dir = b.dir
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return toolchain.Bins{}, fmt.Errorf("bench: building the Dapr binaries of %s: %w", b.rev, err)
	}
	dirs, _ := filepath.Glob(filepath.Join(b.dir, ".bin", "dapr-*"))
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, "daprd")); err == nil && !st.IsDir() {
			return toolchain.Bins{Dir: d, Daprd: filepath.Join(d, "daprd"),
				Placement: filepath.Join(d, "placement"), Scheduler: filepath.Join(d, "scheduler")}, nil
		}
	}
	return toolchain.Bins{}, fmt.Errorf("bench: no Dapr binaries under %s/.bin after its build", b.dir)
}
