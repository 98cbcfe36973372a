package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

func (s *Stack) buildApps(ctx context.Context) error {
	c := &s.cfg
	built := map[string]string{} // package → binary: replicas share one build
	for i := range c.Apps {
		a := &c.Apps[i]
		if a.Build == "" || a.Command != nil {
			continue
		}
		if bin, ok := built[a.Build]; ok { // replicas (and a cluster's hosts) run one program
			a.Command = []string{bin}
			continue
		}
		bin := filepath.Join(c.RunDir, "bin", a.Name)
		built[a.Build] = bin
		fmt.Fprintf(c.Progress, "stack: building %s (%s)\n", a.Name, a.Build)
		args := []string{"build", "-o", bin}
		if os.Getenv("DACA_RACE") != "" { // apps with the race detector (see DEVELOPERS.md)
			args = append(args, "-race")
		}
		cmd := exec.CommandContext(ctx, "go", append(args, a.Build)...)
		cmd.Dir = c.Root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %w\n%s", a.Build, err, out)
		}
		a.Command = []string{bin}
	}
	return nil
}
