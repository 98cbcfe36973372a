package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stack"
)

// costPart is -parts cost: what a chat turn costs, process by process, on a
// private stack with the tool server (offline model, no word delay): plain
// turns and turns with one MCP tool call, at 1 and 16 clients. For each:
// CPU per turn of every process of the stack (each app, each sidecar,
// Redis, placement, scheduler, the tool server), LLM calls and tokens per
// turn (the apps' daca_llm_* metrics), Redis commands per turn (INFO
// commandstats) and pub/sub messages per turn (XADD). With a baseline, its
// apps run on a stack of their own (today's Dapr binaries) and each round
// is measured on both, one after the other, costReps times.
// costReps is how many rounds of each kind each variant runs (their sums
// are reported): this machine's CPU time per turn drifts by 10–20% from
// one round to the next.
const costReps = 3

func benchCost(ctx context.Context, rootDir string, turns int, base *baseline) error {
	type variant struct {
		name string
		st   *stack.Stack
		send func(tool bool) func() error
	}
	var variants []variant
	roots := []struct{ name, root string }{{"today", rootDir}}
	if base != nil {
		roots = append(roots, struct{ name, root string }{base.rev, base.dir})
	}
	var seq atomic.Int64
	for _, v := range roots {
		runDir, secrets, err := benchRunDir("daca-bench-cost-", "")
		if err != nil {
			return err
		}
		defer os.RemoveAll(runDir)
		fmt.Printf("\nbench: starting a private stack with the tool server for the cost of a turn (%s's apps)\n", v.name)
		cfg := stack.Config{Root: v.root, RunDir: runDir, SecretsFile: secrets, Progress: os.Stdout, LogLevel: "warn",
			Apps: []stack.App{stack.Memory.App("LOG_LEVEL=warn"), stack.Tools.App("LOG_LEVEL=warn"),
				stack.Chat.App("LOG_LEVEL=warn", "LLM_OFFLINE_TOKEN_DELAY=0")}}
		if len(variants) > 0 { // the baseline's apps on today's Dapr binaries
			cfg.Bins = &variants[0].st.Bins
		}
		st, err := stack.Start(ctx, cfg)
		if err != nil {
			return fmt.Errorf("bench: %s's apps: %w", v.name, err)
		}
		defer st.Stop()
		url := st.App(contract.ChatApp).SidecarURL() + "/v1.0/invoke/" + contract.ChatApp + "/method/chat"
		call := sidecarCall(ctx, st.APIToken)
		send := func(tool bool) func() error {
			return func() error {
				n := seq.Add(1)
				text := fmt.Sprintf("hello %d", n)
				if tool {
					text = fmt.Sprintf("convert %d km to m", n)
				}
				return call(http.MethodPost, url, chatBody(text, fmt.Sprintf("cost-%d", n%benchSessions)))
			}
		}
		for range benchSessions { // warm up: every session claimed, the tools listed
			if err := send(true)(); err != nil {
				return fmt.Errorf("bench: cost warm-up of %s's apps: %w", v.name, err)
			}
		}
		variants = append(variants, variant{v.name, st, send})
	}
	type row struct {
		kind    string
		clients int
		variant string
		n       int
		cpu     map[string]time.Duration
		llm     map[string]float64 // metric → per turn
		redis   map[string]float64 // command → per turn
		xadd    float64
		errs    int
	}
	var rows []row
	for _, kind := range []string{"plain", "one tool call"} {
		for _, conc := range []int{1, 16} {
			n := turns
			if conc == 1 {
				n = max(turns/4, 32)
			}
			// costReps rounds of each variant, alternating which goes
			// first: the machine's drift falls on both alike.
			sums := make([]row, len(variants))
			for i, v := range variants {
				sums[i] = row{kind: kind, clients: conc, variant: v.name, cpu: map[string]time.Duration{}, llm: map[string]float64{}, redis: map[string]float64{}}
			}
			for rep := range costReps {
				for k := range variants {
					i := (k + rep) % len(variants)
					v, r := variants[i], &sums[i]
					st := v.st
					procs := st.Processes()
					cpu0 := map[string]time.Duration{}
					for _, p := range procs {
						cpu0[p.Spec.Name] = cpuTime(p.Pid())
					}
					llm0 := llmCounters(st)
					redis0 := redisCommands(st)
					_, errs, _ := load(v.send(kind != "plain"), n, conc)
					// The memory applies the turns' events on its own
					// schedule: wait for it (its CPU belongs to the turns).
					waitQuiet(st)
					r.n += n
					r.errs += errs
					for _, p := range procs {
						r.cpu[p.Spec.Name] += cpuTime(p.Pid()) - cpu0[p.Spec.Name]
					}
					for k, v := range llmCounters(st) {
						r.llm[k] += v - llm0[k]
					}
					for k, v := range redisCommands(st) {
						r.redis[k] += v - redis0[k]
					}
					if ctx.Err() != nil {
						return ctx.Err()
					}
				}
			}
			for _, r := range sums { // per turn
				for k := range r.cpu {
					r.cpu[k] /= time.Duration(r.n)
				}
				for k := range r.llm {
					r.llm[k] /= float64(r.n)
				}
				for k := range r.redis {
					r.redis[k] /= float64(r.n)
				}
				r.xadd = r.redis["xadd"]
				rows = append(rows, r)
			}
		}
	}
	fmt.Println("\nbench: the cost of a chat turn, process by process (per turn; CPU from /proc, 10 ms resolution over the whole round)")
	names := make([]string, 0, len(rows[0].cpu))
	for name := range rows[0].cpu {
		names = append(names, name)
	}
	slices.Sort(names)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "\t"
	for _, r := range rows {
		header += fmt.Sprintf("%s, %d client(s)", r.kind, r.clients)
		if len(variants) > 1 {
			header += ", " + r.variant
		}
		header += "\t"
	}
	fmt.Fprintln(tw, header)
	line := func(label string, f func(r row) string) {
		l := label + "\t"
		for _, r := range rows {
			l += f(r) + "\t"
		}
		fmt.Fprintln(tw, l)
	}
	total := func(r row) time.Duration {
		var t time.Duration
		for _, v := range r.cpu {
			t += v
		}
		return t
	}
	for _, name := range names {
		line("CPU "+name, func(r row) string { return fmt.Sprintf("%d µs", r.cpu[name].Microseconds()) })
	}
	line("CPU, all processes", func(r row) string { return fmt.Sprintf("%d µs", total(r).Microseconds()) })
	if len(variants) > 1 {
		// today's share of the baseline's, in today's columns
		line("today ÷ baseline (CPU)", func(r row) string {
			if r.variant != variants[0].name {
				return ""
			}
			for _, b := range rows {
				if b.kind == r.kind && b.clients == r.clients && b.variant == variants[1].name && total(b) > 0 {
					return fmt.Sprintf("%.0f%%", 100*float64(total(r))/float64(total(b)))
				}
			}
			return "?"
		})
	}
	line("LLM calls", func(r row) string { return fmt.Sprintf("%.2f", r.llm["calls"]) })
	line("LLM tokens (prompt + completion)", func(r row) string { return fmt.Sprintf("%.0f", r.llm["tokens"]) })
	line("memory CAS writes made again (today's apps count)", func(r row) string { return fmt.Sprintf("%.2f", r.llm["cas retries"]) })
	line("Redis commands", func(r row) string { return fmt.Sprintf("%.1f", sum(r.redis)) })
	line("pub/sub messages (XADD)", func(r row) string { return fmt.Sprintf("%.1f", r.xadd) })
	line("errors", func(r row) string { return strconv.Itoa(r.errs) })
	tw.Flush()
	if len(variants) > 1 {
		fmt.Printf("%d rounds of each, today's apps and %s's alternating (each on a stack of its own with today's Dapr binaries; the stack not measured sits idle); per turn over all rounds\n", costReps, variants[1].name)
	}
	for _, v := range variants {
		fmt.Printf("\nbench: Redis commands per turn, the most frequent (plain turn, 16 clients, %s's apps)\n", v.name)
		var top map[string]float64
		for _, r := range rows {
			if r.kind == "plain" && r.clients == 16 && r.variant == v.name {
				top = r.redis
			}
		}
		cmds := make([]string, 0, len(top))
		for k := range top {
			cmds = append(cmds, k)
		}
		slices.SortFunc(cmds, func(a, b string) int { return int(top[b]*100) - int(top[a]*100) })
		for i, k := range cmds {
			if i == 10 || top[k] < 0.05 {
				break
			}
			fmt.Printf("  %-16s %.1f\n", k, top[k])
		}
	}
	return nil
}

func sum(m map[string]float64) float64 {
	var t float64
	for _, v := range m {
		t += v
	}
	return t
}

// waitQuiet waits (at most 30 s) until the conversations stream has no
// pending entries for the memory's consumer group: the turns' events are
// applied.
func waitQuiet(st *stack.Stack) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		v, err := st.RedisDo("XPENDING", contract.TopicConversations, contract.MemoryApp)
		if l, ok := v.([]any); err != nil || !ok || len(l) == 0 || l[0] == int64(0) {
			time.Sleep(500 * time.Millisecond) // the summaries' LLM calls follow the events
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var cmdstat = regexp.MustCompile(`(?m)^cmdstat_([a-z|]+):calls=(\d+)`)

// redisCommands is INFO commandstats: calls by command.
func redisCommands(st *stack.Stack) map[string]float64 {
	out := map[string]float64{}
	v, err := st.RedisDo("INFO", "commandstats")
	s, _ := v.(string)
	if err != nil {
		return out
	}
	for _, m := range cmdstat.FindAllStringSubmatch(s, -1) {
		n, _ := strconv.ParseFloat(m[2], 64)
		out[m[1]] = n
	}
	return out
}

var llmMetric = regexp.MustCompile(`(?m)^daca_(llm_call_duration_seconds_count|llm_tokens_total|memory_cas_retries_total)\{[^}]*\} ([0-9.e+]+)$`)

// llmCounters adds up the apps' LLM calls and tokens, and the memory's
// compare-and-swap writes made again (their /metrics).
func llmCounters(st *stack.Stack) map[string]float64 {
	out := map[string]float64{}
	for _, id := range []string{contract.ChatApp, contract.MemoryApp} {
		resp, err := http.Get(st.App(id).AppURL() + "/metrics")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, m := range llmMetric.FindAllStringSubmatch(string(b), -1) {
			n, _ := strconv.ParseFloat(m[2], 64)
			switch m[1] {
			case "llm_call_duration_seconds_count":
				out["calls"] += n
			case "llm_tokens_total":
				out["tokens"] += n
			case "memory_cas_retries_total":
				out["cas retries"] += n
			}
		}
	}
	return out
}
