package bench

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/toolchain"
)

// benchReleases measures chat turns of today's apps on the project's Dapr
// release against the baseline's apps on the baseline's own Dapr release
// and on the project's, each on a stack of its own with only the two
// services (no gateway subscribed to their events), in alternating rounds:
// the first pair compares what a user sees, the second separates what the
// runtime changed from what the apps did.
func benchReleases(ctx context.Context, rootDir string, st *stack.Stack, call func(method, url string, body []byte) error, base *baseline, turns int) error {
	oldBins, err := base.dapr(ctx)
	if err != nil {
		return err
	}
	type variant struct {
		name string
		st   *stack.Stack
	}
	var variants []variant
	for _, v := range []struct {
		root, apps string
		bins       toolchain.Bins
		env        []string
	}{
		{rootDir, "today's apps", st.Bins, []string{"LLM_OFFLINE_TOKEN_DELAY=0"}},
		// the variable is older than every baseline worth measuring; a
		// baseline without streaming ignores it
		{base.dir, "apps of " + base.rev, oldBins, []string{"LLM_OFFLINE_TOKEN_DELAY=0"}},
		{base.dir, "apps of " + base.rev, st.Bins, []string{"LLM_OFFLINE_TOKEN_DELAY=0"}},
	} {
		runDir, secrets, err := benchRunDir("daca-bench-release-", "")
		if err != nil {
			return err
		}
		defer os.RemoveAll(runDir)
		name := v.apps + " (" + daprdLabel(v.bins.Daprd) + ")"
		fmt.Printf("\nbench: starting %s\n", name)
		s, err := stack.Start(ctx, stack.Config{
			Root: v.root, RunDir: runDir, SecretsFile: secrets, Progress: os.Stdout, LogLevel: "warn", Bins: &v.bins, APIToken: st.APIToken,
			Apps: []stack.App{stack.Memory.App("LOG_LEVEL=warn"), stack.Chat.App(append([]string{"LOG_LEVEL=warn"}, v.env...)...)},
		})
		if err != nil {
			return fmt.Errorf("bench: %s: %w", name, err)
		}
		defer s.Stop()
		variants = append(variants, variant{name, s})
	}
	var seq atomic.Int64
	// paths rotate over benchSessions sessions; onePaths send every turn to
	// one session, one after another (each turn waits for the one before:
	// the cost of a session's order).
	paths := make([]func() error, len(variants))
	onePaths := make([]func() error, len(variants))
	firstErr := make([]error, len(variants))
	var errMu sync.Mutex
	for i, v := range variants {
		url := v.st.App(contract.ChatApp).SidecarURL() + "/v1.0/invoke/" + contract.ChatApp + "/method/chat"
		send := func(body []byte) error {
			err := call(http.MethodPost, url, body)
			if err != nil {
				errMu.Lock()
				if firstErr[i] == nil {
					firstErr[i] = err
				}
				errMu.Unlock()
			}
			return err
		}
		paths[i] = func() error { return send(chatRequest(seq.Add(1), "release")) }
		onePaths[i] = func() error { return send(chatRequestIn(seq.Add(1), "release-one")) }
	}
	for i := range paths { // warm up: a turn in every session (see benchTurns)
		for range benchSessions {
			if err := paths[i](); err != nil {
				return fmt.Errorf("bench: %s: %w", variants[i].name, err)
			}
		}
		if err := onePaths[i](); err != nil {
			return fmt.Errorf("bench: %s: %w", variants[i].name, err)
		}
	}
	watch := func(p int) (int, int) {
		c := variants[p].st.App(contract.ChatApp)
		return c.AppCmd.Pid(), c.Daprd.Pid()
	}
	fmt.Println()
	fmt.Println("bench: chat turns, today's apps and Dapr against the baseline's, alternating rounds")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "apps (Dapr)\tsessions\tclients\tturns\tper second\tp50\tp99\tchat-service CPU/turn\tits sidecar CPU/turn\terrors\t")
	for _, row := range []struct {
		conc     int
		sessions string
		paths    []func() error
	}{{1, "one", onePaths}, {1, strconv.Itoa(benchSessions), paths}, {16, strconv.Itoa(benchSessions), paths}} {
		conc := row.conc
		n := turns
		if conc == 1 {
			n = max(turns/4, 32)
		}
		m := interleaved(row.paths, n, conc, watch)
		for i, r := range m {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.1f\t%s\t%s\t%d µs\t%d µs\t%d\t\n", variants[i].name, row.sessions, conc, len(r.lat), r.rate(),
				ms(pct(r.lat, 50)), ms(pct(r.lat, 99)), r.cpuPerReq(r.cpu).Microseconds(), r.cpuPerReq(r.cpu2).Microseconds(), r.errs)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	tw.Flush()
	for i, err := range firstErr {
		if err != nil {
			return fmt.Errorf("bench: %s: %w", variants[i].name, err)
		}
	}
	fmt.Println("each on a stack of its own (Redis, placement, scheduler, two apps and their sidecars); the stacks not measured in a round sit idle")
	return nil
}

// daprdLabel is "Dapr " and what daprd --version prints.
func daprdLabel(daprd string) string {
	return "Dapr " + daprdVersion(daprd)
}

// daprdVersion is what daprd --version prints ("?" when it does not run).
func daprdVersion(daprd string) string {
	out, err := exec.Command(daprd, "--version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(bytes.SplitN(out, []byte("\n"), 2)[0]))
}
