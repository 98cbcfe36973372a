// Package bench is `daca bench` (make bench): it starts private stacks
// (own Redis, random ports, offline model) and measures chat turns end to
// end, the gateway against its sidecar and a bare hop (hop.go, run as
// `daca hop`), fan-out to many subscriptions, the gateway's two paths to
// its sidecar and streamed replies; with -baseline, an older revision
// beside today's code in the same rounds (baseline.go, releases.go). It
// prints tables; docs/benchmark.md keeps a run's.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stack"
)

// UsageError is a bad command line: the caller prints it with the usage.
type UsageError string

func (u UsageError) Error() string { return string(u) }

// Run is `daca bench`: it starts a private stack (own Redis, random ports,
// offline model) and measures chat turns end to end and a bare memory read
// through the sidecar.
func Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("daca bench", flag.ContinueOnError)
	root := fs.String("root", ".", "repository root")
	turns := fs.Int("turns", 200, "chat turns per concurrency level")
	reads := fs.Int("reads", 4000, "memory reads per concurrency level")
	subs := fs.Int("subscriptions", 10000, "open subscriptions for the fan-out measurement")
	clients := fs.String("clients", "1,16,64", "concurrent clients of the gateway comparison, comma separated")
	fanoutRuns := fs.Int("fanout-runs", 5, "runs of the fan-out to -subscriptions")
	fanoutLarge := fs.Int("fanout-large", 50000, "subscriptions of one more fan-out run on a fresh gateway process (0: none)")
	streamTurns := fs.Int("stream-turns", 30, "chat turns of the time-to-first-token measurement")
	streamSubs := fs.Int("stream-subscribers", 1000, "subscribers of the one streamed turn")
	baseRev := fs.String("baseline", "", "a git revision of this repository measured beside today's code in the same rounds: its gateway in the gateway part, its apps on its own Dapr release and on today's in the turns part, its apps on today's Dapr in the cost part; \"\": none")
	partsFlag := fs.String("parts", "turns,gateway,fanout,invocation,stream,tools,cost", "what to measure, comma separated: turns (chat turns and the sidecar floor), gateway (the gateway against its sidecar), fanout (one event to many subscriptions), invocation (the gateway's two paths to its sidecar), stream (time to first token and one turn streamed to many, on a stack of its own with a local provider), tools (a turn with one MCP tool call beside a plain turn), cost (what a turn costs each process, on a stack of its own)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return UsageError(err.Error())
	}
	var levels []int
	for _, f := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return UsageError("-clients: want positive integers separated by commas, got " + strconv.Quote(*clients))
		}
		levels = append(levels, n)
	}
	parts := map[string]bool{}
	for _, p := range strings.Split(*partsFlag, ",") {
		switch p = strings.TrimSpace(p); p {
		case "turns", "gateway", "fanout", "invocation", "stream", "tools", "cost":
			parts[p] = true
		default:
			return UsageError("-parts: want turns, gateway, fanout, invocation, stream, tools or cost, got " + strconv.Quote(p))
		}
	}
	rootDir, err := filepath.Abs(*root)
	if err != nil {
		return err
	}
	var base *baseline
	if *baseRev != "" && (parts["turns"] || parts["gateway"] || parts["cost"]) {
		if base, err = openBaseline(ctx, rootDir, *baseRev); err != nil {
			return err
		}
	}
	if parts["turns"] || parts["gateway"] || parts["fanout"] || parts["invocation"] || parts["tools"] {
		if err := benchOffline(ctx, rootDir, parts, *turns, *reads, fanOutConfig{*subs, *fanoutRuns, *fanoutLarge}, levels, base); err != nil {
			return err
		}
	}
	if parts["cost"] {
		if err := benchCost(ctx, rootDir, *turns, base); err != nil {
			return err
		}
	}
	if parts["stream"] {
		return benchStream(ctx, rootDir, *streamTurns, *streamSubs)
	}
	return nil
}

// benchRunDir makes a private stack's run directory and its secret store
// file, holding llmKey as the LLM key ("": the offline model).
func benchRunDir(prefix, llmKey string) (dir, secrets string, err error) {
	if dir, err = os.MkdirTemp("", prefix); err != nil {
		return "", "", err
	}
	secrets = filepath.Join(dir, "secrets.json")
	b, _ := json.Marshal(map[string]string{contract.SecretLLMKey: llmKey})
	if err := os.WriteFile(secrets, b, 0o600); err != nil {
		os.RemoveAll(dir)
		return "", "", err
	}
	return dir, secrets, nil
}

// fanOutConfig is the fan-out measurement: runs of subs subscriptions, then
// one of large.
type fanOutConfig struct{ subs, runs, large int }

// benchOffline measures chat turns, the gateway and its invocation paths on
// a private stack with the offline model.
func benchOffline(ctx context.Context, rootDir string, parts map[string]bool, turns, reads int, fan fanOutConfig, levels []int, base *baseline) error {
	runDir, secrets, err := benchRunDir("daca-bench-", "")
	if err != nil {
		return err
	}
	defer os.RemoveAll(runDir)
	// The gateways' pprof endpoints (the fan-out forces a GC through them
	// to read live memory); DACA_BENCH_PPROF chooses the first's address.
	pprof := map[string]string{"gateway": os.Getenv("DACA_BENCH_PPROF"), "gateway-grpc": ""}
	for name, addr := range pprof {
		if addr == "" {
			port, err := stack.FreePort() // one the stack will not hand out too
			if err != nil {
				return err
			}
			pprof[name] = fmt.Sprintf("127.0.0.1:%d", port)
		}
	}
	apps := []stack.App{
		stack.Memory.App("LOG_LEVEL=warn"),
		stack.Chat.App("LOG_LEVEL=warn", "LLM_OFFLINE_TOKEN_DELAY=0", "PPROF_ADDR="+os.Getenv("DACA_BENCH_CHAT_PPROF")), // as before streaming: the turn rate compares
		stack.Gateway.App("LOG_LEVEL=warn", "RATE_LIMIT_PER_MINUTE=0", "SUBSCRIBER_QUEUE=16", "PPROF_ADDR="+pprof["gateway"]),
		stack.Gateway.Named("gateway-grpc", "LOG_LEVEL=warn", "RATE_LIMIT_PER_MINUTE=0", "BACKEND_INVOCATION=grpc", "PPROF_ADDR="+pprof["gateway-grpc"]),
	}
	if parts["tools"] { // before chat-service: its sidecar discovers the tools when it starts
		apps = append([]stack.App{stack.Tools.App("LOG_LEVEL=warn")}, apps...)
	}
	if base != nil && parts["gateway"] {
		bin, err := base.gateway(ctx, filepath.Join(runDir, "bin"))
		if err != nil {
			return err
		}
		old := stack.Gateway.Named(baselineApp, "LOG_LEVEL=warn", "RATE_LIMIT_PER_MINUTE=0")
		old.Command = []string{bin}
		apps = append(apps, old)
	}
	fmt.Println("bench: starting a private stack (offline model, own Redis, random ports)")
	st, err := stack.Start(ctx, stack.Config{
		Root: rootDir, RunDir: runDir, SecretsFile: secrets, Progress: os.Stdout, LogLevel: "warn", Apps: apps,
	})
	if err != nil {
		return err
	}
	defer st.Stop()

	chatURL := st.App(contract.ChatApp).SidecarURL() + "/v1.0/invoke/" + contract.ChatApp + "/method/chat"
	memURL := st.App(contract.MemoryApp).SidecarURL() + "/v1.0/invoke/" + contract.MemoryApp + "/method/" + api.GetMemory.Path("bench-user")
	call := sidecarCall(ctx, st.APIToken)
	var seq atomic.Int64
	chatOnce := func() error {
		return call(http.MethodPost, chatURL, chatRequest(seq.Add(1), "bench"))
	}
	readOnce := func() error { return call(http.MethodGet, memURL, nil) }

	if err := benchTurns(ctx, parts["turns"], chatOnce, readOnce, &seq, turns, reads, st); err != nil {
		return err
	}
	if parts["turns"] && base != nil {
		if err := benchReleases(ctx, rootDir, st, call, base, turns); err != nil {
			return err
		}
	}
	if parts["tools"] {
		if err := benchTools(ctx, call, chatURL); err != nil {
			return err
		}
	}
	if parts["gateway"] {
		if err := benchGateway(ctx, st, call, reads, levels); err != nil {
			return err
		}
	}
	if parts["fanout"] {
		if err := benchFanOuts(ctx, st, call, pprof, fan.subs, fan.runs, fan.large); err != nil {
			return err
		}
	}
	if parts["invocation"] {
		return benchInvocation(ctx, st, call, reads, levels)
	}
	return nil
}

// benchSessions is how many sessions the measured chat turns rotate over.
const benchSessions = 64

// benchTurns measures chat turns and the sidecar floor (when measure), then
// waits until the memory service has applied the turns' events.
func benchTurns(ctx context.Context, measure bool, chatOnce, readOnce func() error, seq *atomic.Int64, turns, reads int, st *stack.Stack) error {
	// Warm up: a turn in each of the 64 sessions the turns rotate over, so
	// that what follows is the steady state (a session's first turn also
	// claims the session at agent-memory-service; its later turns do not).
	for range benchSessions {
		if err := chatOnce(); err != nil {
			return err
		}
	}
	var results []result
	for _, c := range []struct {
		name string
		op   func() error
		n    int
	}{{"chat turn (POST /chat via sidecar)", chatOnce, turns}, {"GET /memories/{id} via sidecar (floor)", readOnce, reads}} {
		if !measure {
			break
		}
		for _, conc := range []int{1, 16} {
			n := c.n
			if conc == 1 {
				n = max(c.n/4, 20)
			}
			lat, errs, elapsed := load(c.op, n, conc)
			slices.Sort(lat)
			results = append(results, result{c.name, conc, n, float64(len(lat)) / elapsed.Seconds(), pct(lat, 50), pct(lat, 99), errs})
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	if measure {
		printTurns(results)
	}
	// The memory service applies each turn's event after the turn (summary,
	// history): let it finish, so that its work does not weigh on the
	// measurements that follow.
	return waitEventsApplied(ctx, st.App(contract.MemoryApp).AppURL()+"/metrics", int(seq.Load()))
}

func printTurns(results []result) {
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\tclients\trequests\tper second\tp50\tp99\terrors\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%s\t%s\t%d\t\n", r.name, r.conc, r.n, r.rate, ms(r.p50), ms(r.p99), r.errs)
	}
	tw.Flush()
}

// waitEventsApplied waits until the memory service has answered Dapr for
// want conversation events (applied or dropped), as its /metrics count them.
func waitEventsApplied(ctx context.Context, metricsURL string, want int) error {
	fmt.Printf("\nbench: waiting for agent-memory-service to apply the %d conversation events of the chat turns\n", want)
	got := 0
	err := waitMetric(ctx, metricsURL, 3*time.Minute, func(text string) bool {
		n, _ := metricSum(text, "daca_pubsub_events_total", `topic="conversations"`)
		got = int(n)
		return got >= want
	})
	if err != nil {
		return fmt.Errorf("bench: agent-memory-service applied %d of %d conversation events: %w", got, want, err)
	}
	return nil
}

// waitMetric reads the Prometheus text at url until done says so, for at
// most timeout.
func waitMetric(ctx context.Context, url string, timeout time.Duration, done func(text string) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if resp, err := http.Get(url); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if done(string(b)) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// metricSum adds the samples of metric whose labels contain label (""
// takes an unlabelled metric too); found says whether there was any.
func metricSum(text, metric, label string) (sum float64, found bool) {
	for _, l := range strings.Split(text, "\n") {
		if (strings.HasPrefix(l, metric+"{") || strings.HasPrefix(l, metric+" ")) && strings.Contains(l, label) {
			f := strings.Fields(l)
			n, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum, found = sum+n, true
		}
	}
	return sum, found
}

// chatRequest is the body of the n-th chat turn of the benchmark, in one of
// benchSessions sessions named with prefix.
func chatRequest(n int64, prefix string) []byte {
	return chatRequestIn(n, fmt.Sprintf("%s-%d", prefix, n%benchSessions))
}

// chatRequestIn is the body of the n-th chat turn in session.
func chatRequestIn(n int64, session string) []byte {
	return chatBody(fmt.Sprintf("hello %d", n), session)
}

// chatBody is the body of a chat turn of bench-user's with text in session.
func chatBody(text, session string) []byte {
	b, _ := json.Marshal(map[string]any{"user_id": "bench-user", "text": text, "metadata": map[string]string{"session_id": session}})
	return b
}

// sidecarCall returns a function that sends a request through a sidecar
// with its API token and wants a 2xx answer.
func sidecarCall(ctx context.Context, token string) func(method, url string, body []byte) error {
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
	return func(method, url string, body []byte) error {
		req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("dapr-api-token", token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("%s %s: %s", method, url, resp.Status)
		}
		return nil
	}
}

func load(op func() error, n, conc int) ([]time.Duration, int, time.Duration) {
	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				t := time.Now()
				err := op()
				d := time.Since(t)
				mu.Lock()
				if err != nil {
					errs++
				} else {
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return lat, errs, time.Since(start)
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// result is one row of the chat-turn table.
type result struct {
	name     string
	conc, n  int
	rate     float64
	p50, p99 time.Duration
	errs     int
}
