package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/coder/websocket"

	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/daprc"
	"github.com/daca-go/daca/internal/dev/stack"
)

// benchGateway compares memory(userId) through the gateway with the same
// read straight through the gateway's sidecar, and measures the fan-out of
// one event to many open subscriptions.
func benchGateway(ctx context.Context, st *stack.Stack, call func(method, url string, body []byte) error, reads int, levels []int) error {
	gw := st.App("gateway")
	gql := gw.AppURL() + "/graphql"
	direct := gw.SidecarURL() + "/v1.0/invoke/" + contract.MemoryApp + "/method/" + api.GetMemory.Path("bench-user")
	query, _ := json.Marshal(map[string]string{"query": `{ memory(userId: "bench-user") { name preferredStyle userSummary } }`})
	// The call the gateway itself makes: the go-sdk over the sidecar's gRPC API.
	sdk, err := daprc.Dial(ctx, gw.SidecarGRPC(), st.APIToken, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer sdk.Close()
	hopURL, hopCmd, err := startHop(ctx, gw.HTTPPort, st.APIToken)
	if err != nil {
		return err
	}
	defer func() { hopCmd.Process.Kill(); hopCmd.Wait() }()
	hopURL += "/" + api.GetMemory.Path("bench-user")
	if err := call(http.MethodGet, hopURL, nil); err != nil {
		return fmt.Errorf("bench: bare hop: %w", err)
	}
	// Every HTTP path through the same lean client (rawHTTP), so that the
	// load generator takes as little as it can of the two cores it shares.
	conns := slices.Max(levels)
	header := map[string]string{"dapr-api-token": st.APIToken}
	var raws []*rawHTTP
	rawPath := func(method, url string, body []byte) (func() error, error) {
		h, err := newRawHTTP(method, url, body, header, conns)
		if err != nil {
			return nil, err
		}
		raws = append(raws, h)
		return h.do, nil
	}
	defer func() {
		for _, h := range raws {
			h.close()
		}
	}()
	gwPath, err := rawPath(http.MethodPost, gql, query)
	if err != nil {
		return err
	}
	directPath, err := rawPath(http.MethodGet, direct, nil)
	if err != nil {
		return err
	}
	hopPath, err := rawPath(http.MethodGet, hopURL, nil)
	if err != nil {
		return err
	}
	// The paths, in this order (the indexes below).
	const (
		viaGateway = iota
		viaSidecar
		viaGoSDK
		viaHop
		viaBaseline
	)
	paths := []func() error{
		gwPath,
		directPath,
		func() error {
			_, err := sdk.InvokeMethod(ctx, contract.MemoryApp, api.GetMemory.Path("bench-user"), http.MethodGet)
			return err
		},
		hopPath,
	}
	// The baseline: the gateway of an older revision (daca bench -baseline),
	// on a sidecar of its own, in the same rounds.
	base := st.App(baselineApp)
	if base != nil {
		basePath, err := rawPath(http.MethodPost, base.AppURL()+"/graphql", query)
		if err != nil {
			return err
		}
		paths = append(paths, basePath)
	}
	watch := func(p int) (int, int) {
		switch p {
		case viaHop:
			return hopCmd.Process.Pid, gw.Daprd.Pid()
		case viaBaseline:
			return base.AppCmd.Pid(), base.Daprd.Pid()
		}
		return gw.AppCmd.Pid(), gw.Daprd.Pid()
	}
	// Warm every path (connections, pools, caches) before measuring any.
	for _, p := range paths {
		load(p, 500, 16)
	}
	fmt.Println()
	fmt.Println("bench: memory(userId) through the gateway vs the same read through the gateway's sidecar (alternating rounds)")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "clients\tgateway req/s\tsidecar req/s\tthroughput kept\tgateway p50\tsidecar p50\tp50 added\tgateway p99\tsidecar p99\tgo-sdk p50\tbare hop: kept\tbare hop: p50 added\tgateway over bare hop (p50)\tbare hop CPU/req\tgateway CPU/req\t"
	if base != nil {
		head += "baseline req/s\tbaseline p50\tbaseline CPU/req\tCPU/req of baseline's\t"
	}
	fmt.Fprintln(tw, head+"targets\t")
	for _, conc := range levels {
		n := reads
		if conc == 1 {
			n = max(reads/4, 50)
		}
		m := interleaved(paths, n, conc, watch)
		g, d, k, h := m[viaGateway], m[viaSidecar], m[viaGoSDK], m[viaHop]
		if g.errs+d.errs+k.errs+h.errs > 0 {
			return fmt.Errorf("bench: %d gateway, %d sidecar, %d go-sdk and %d bare-hop errors", g.errs, d.errs, k.errs, h.errs)
		}
		baseCols := ""
		cpu := g.cpuPerReq(g.cpu)
		third := true
		if base != nil {
			b := m[viaBaseline]
			if b.errs > 0 {
				return fmt.Errorf("bench: %d errors of the baseline gateway", b.errs)
			}
			bcpu := b.cpuPerReq(b.cpu)
			share := 100 * float64(cpu) / float64(max(bcpu, 1))
			third = share <= 100.0/3
			baseCols = fmt.Sprintf("%.0f\t%s\t%d µs\t%.0f%%\t", b.rate(), ms(pct(b.lat, 50)), bcpu.Microseconds(), share)
		}
		grate, drate := g.rate(), d.rate()
		kept, added := 100*grate/drate, 100*(float64(pct(g.lat, 50))/float64(pct(d.lat, 50))-1)
		verdict := "met"
		overHop := pct(g.lat, 50) - pct(h.lat, 50)
		if math.Round(kept) < 75 || math.Round(added) > 30 || overHop > hopTarget(conc) || !third {
			verdict = "missed"
		}
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%.0f%%\t%s\t%s\t%+.0f%%\t%s\t%s\t%s\t%.0f%%\t%+.0f%%\t%+d µs\t%d µs\t%d µs\t%s%s\t\n", conc, grate, drate, kept,
			ms(pct(g.lat, 50)), ms(pct(d.lat, 50)), added, ms(pct(g.lat, 99)), ms(pct(d.lat, 99)),
			ms(pct(k.lat, 50)), 100*h.rate()/drate, 100*(float64(pct(h.lat, 50))/float64(pct(d.lat, 50))-1), overHop.Microseconds(), h.cpuPerReq(h.cpu).Microseconds(), cpu.Microseconds(), baseCols, verdict)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	tw.Flush()
	fmt.Println("targets: the gateway keeps at least 75% of the direct throughput, adds at most 30% to p50, and at most 100 µs (1 client) to 300 µs (16 and more) over the bare hop")
	fmt.Println("go-sdk p50: the go-sdk's call over the sidecar's gRPC API (BACKEND_INVOCATION=grpc) made straight from the load generator;")
	fmt.Println("bare hop: a process that only makes the gateway's call (the sidecar's HTTP API) and writes back the answer (no GraphQL), against the sidecar path:")
	fmt.Println("  what any separate gateway process costs on this machine; gateway over bare hop: what the gateway itself adds;")
	fmt.Println("gateway CPU/req, bare hop CPU/req: CPU time of the process per request")
	if base != nil {
		fmt.Println("baseline: the gateway of the -baseline revision on a sidecar of its own, in the same rounds; CPU/req of baseline's: today's gateway CPU per request as a share of the baseline's (target ≤ 33%)")
	}
	if slices.Contains(levels, 1) {
		hop, err := url.Parse(hopURL)
		if err != nil {
			return err
		}
		hopPort, _ := strconv.Atoi(hop.Port())
		proxies := []proxy{
			{"gateway", paths[viaGateway], gw.AppPort, []int{gw.HTTPPort}},
			{"bare hop", paths[viaHop], hopPort, []int{gw.HTTPPort}},
		}
		if base != nil {
			// An older gateway may call its sidecar's gRPC API (the go-sdk).
			proxies = append(proxies, proxy{"baseline gateway", paths[viaBaseline], base.AppPort, []int{base.HTTPPort, base.GRPCPort}})
		}
		return benchOwnTime(ctx, max(reads/4, 50), proxies)
	}
	return nil
}

// proxy is a process of the own-time measurement.
type proxy struct {
	name  string
	do    func() error // one request to it
	front int          // the port its clients call
	back  []int        // its sidecar's ports
}

// benchOwnTime measures what the gateway and the bare hop add by themselves
// to requests of one client (ownTime), in alternating rounds of n requests
// in all per path.
func benchOwnTime(ctx context.Context, n int, proxies []proxy) error {
	skipped := func(err error) error {
		fmt.Println()
		fmt.Println("bench: own time of the gateway and the bare hop skipped:", err)
		return nil
	}
	if _, err := stack.EnsureDebianPackage(ctx, "tcpdump", "tcpdump", func(s string) { fmt.Println("bench:", s) }); err != nil {
		return skipped(err)
	}
	own := make([]ownTime, len(proxies))
	rounds := benchRounds / 2
	for i := range rounds {
		k := n / rounds
		for r := range proxies {
			j := (i + r) % len(proxies) // alternate which goes first
			p := proxies[j]
			var errs int
			lines, err := capture(ctx, append([]int{p.front}, p.back...), func() { _, errs, _ = load(p.do, k, 1) })
			if errors.Is(err, errNoCapture) {
				return skipped(err)
			}
			if err != nil {
				return err
			}
			if errs > 0 {
				return fmt.Errorf("bench: own time: %d errors of the %s", errs, p.name)
			}
			o := ownTimes(strings.NewReader(lines), p.front, p.back...)
			own[j].before = append(own[j].before, o.before...)
			own[j].after = append(own[j].after, o.after...)
			own[j].total = append(own[j].total, o.total...)
		}
	}
	// A proxy whose requests could not be told apart in its packets (fewer
	// than half found) is reported as such.
	found := func(i int) bool { return len(own[i].total) >= n/2 }
	for i := range own {
		slices.Sort(own[i].before)
		slices.Sort(own[i].after)
		slices.Sort(own[i].total)
	}
	us := func(d time.Duration) string { return fmt.Sprintf("%d µs", d.Microseconds()) }
	fmt.Println()
	fmt.Println("bench: what the gateway and the bare hop add by themselves, one client (loopback packets' timestamps, tcpdump; alternating rounds)")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "process\trequests\town time p25\town time p50\town time p75\tbefore the call p50\tafter the call p50\t")
	for i, p := range proxies {
		o := own[i]
		if !found(i) {
			fmt.Fprintf(tw, "%s\t%d of %d found\t\t\t\t\t\t\n", p.name, len(o.total), n)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", p.name, len(o.total), us(pct(o.total, 25)), us(pct(o.total, 50)), us(pct(o.total, 75)), us(pct(o.before, 50)), us(pct(o.after, 50)))
	}
	tw.Flush()
	if !found(0) || !found(1) {
		fmt.Println("gateway over bare hop, own time: not measured (requests not found in the packets)")
		return nil
	}
	over := pct(own[0].total, 50) - pct(own[1].total, 50)
	verdict := "met"
	if over > hopTarget(1) {
		verdict = "missed"
	}
	fmt.Printf("gateway over bare hop, own time p50: %+d µs (target ≤ %d µs): %s\n", over.Microseconds(), hopTarget(1).Microseconds(), verdict)
	if len(proxies) > 2 {
		fmt.Println("baseline gateway: the -baseline revision's, on a sidecar of its own")
	}
	fmt.Println("own time: from the last packet of the request to the first of the call to the sidecar (before), and from the last packet of the sidecar's answer to the first of the answer (after)")
	return nil
}

// hopTarget is the most the gateway may add to the bare hop's p50 at conc
// clients.
func hopTarget(conc int) time.Duration {
	if conc == 1 {
		return 100 * time.Microsecond
	}
	return 300 * time.Microsecond
}

// measured is the outcome of several rounds of load on one path.
type measured struct {
	lat     []time.Duration // sorted
	errs    int
	elapsed time.Duration
	cpu     time.Duration // CPU time the watched process spent during the rounds
	cpu2    time.Duration // and the second watched process (its sidecar)
}

// cpuPerReq is d per request measured.
func (m measured) cpuPerReq(d time.Duration) time.Duration {
	return d / time.Duration(max(len(m.lat), 1))
}

func (m measured) rate() float64 { return float64(len(m.lat)) / m.elapsed.Seconds() }

// benchRounds is how many rounds interleaved runs.
const benchRounds = 16

// interleaved runs n requests on each path with conc clients, in rounds
// that take the paths in turn, each round in a rotated order, so that every
// path sees the same machine: on a shared machine the speed drifts by more
// than the difference being measured, and measuring one path after the
// other would compare the drift. watch gives the processes whose CPU a
// path's rounds are charged with (cpu, cpu2).
func interleaved(paths []func() error, n, conc int, watch func(path int) (pid, pid2 int)) []measured {
	m := make([]measured, len(paths))
	for i := range benchRounds {
		k := n / benchRounds
		if i < n%benchRounds {
			k++
		}
		for j := range paths {
			p := (i + j) % len(paths)
			pid, pid2 := watch(p)
			cpu0, cpu20 := cpuTime(pid), cpuTime(pid2)
			lat, errs, el := load(paths[p], k, conc)
			m[p].cpu += cpuTime(pid) - cpu0
			m[p].cpu2 += cpuTime(pid2) - cpu20
			m[p].lat = append(m[p].lat, lat...)
			m[p].errs += errs
			m[p].elapsed += el
		}
	}
	for i := range m {
		slices.Sort(m[i].lat)
	}
	return m
}

// cpuTime is the CPU time (user and system, all threads) process pid has
// used so far, from /proc (10 ms resolution); 0 when unknown.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // after "pid (comm)"
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * (time.Second / 100) // USER_HZ
}

func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// fanOutRun is one fan-out measurement.
type fanOutRun struct {
	subs, delivered int
	lat             []time.Duration // sorted
	perSub          float64         // bytes of gateway RSS per idle subscription (0: not measured)
	livePerSub      float64         // bytes of the gateway's live heap and stacks per idle subscription, after a GC (0: not measured)
}

// benchFanOuts measures the fan-out of one event runs times to subs
// subscriptions on the gateway, then once to large subscriptions on a
// gateway process that has not served any (gateway-grpc), so its memory per
// idle subscription is its own; it prints one table with the targets.
func benchFanOuts(ctx context.Context, st *stack.Stack, call func(method, url string, body []byte) error, pprof map[string]string, subs, runs, large int) error {
	var rows []fanOutRun
	for i := range runs {
		r, err := benchFanOut(ctx, st, "gateway", call, pprof["gateway"], subs, i == 0)
		if err != nil {
			return err
		}
		rows = append(rows, r)
	}
	if large > 0 {
		r, err := benchFanOut(ctx, st, "gateway-grpc", call, pprof["gateway-grpc"], large, true)
		if err != nil {
			return err
		}
		rows = append(rows, r)
	}
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "subscriptions\tdelivered\tp50\tp99\tmax\tgateway memory per idle subscription (live, after a GC)\tgateway RSS per idle subscription\ttargets\t")
	kib := func(b float64) string {
		if b <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f KiB", b/1024)
	}
	for _, r := range rows {
		verdict := "met"
		if r.delivered < r.subs || pct(r.lat, 99) > 250*time.Millisecond && r.subs <= subs || r.livePerSub > 12*1024 {
			verdict = "missed"
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.subs, r.delivered, ms(pct(r.lat, 50)), ms(pct(r.lat, 99)), ms(pct(r.lat, 100)), kib(r.livePerSub), kib(r.perSub), verdict)
	}
	tw.Flush()
	fmt.Printf("targets: %d subscriptions delivered within 250 ms at p99 in every run; at most 12 KiB of gateway memory per idle subscription\n", subs)
	fmt.Println("memory per idle subscription: the gateway's heap and stacks in use (its /metrics, after a GC forced through its pprof endpoint) before and after opening them;")
	fmt.Println("  RSS: its resident memory, which also holds the garbage of opening them until a GC runs (GOGC=400) and what the runtime has not returned to the system")
	return nil
}

// loopbackSources are the local addresses the fan-out's websockets come
// from, in turn: each has its own range of ephemeral ports, so tens of
// thousands of connections do not run out of them.
var loopbackSources = []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"}

// benchFanOut opens subs subscriptions to conversationUpdated on the named
// gateway (100 per websocket), publishes one event and times its arrival at
// each; with memory, it also reads the gateway's memory per idle
// subscription (its RSS before and after opening them).
func benchFanOut(ctx context.Context, st *stack.Stack, name string, call func(method, url string, body []byte) error, pprofAddr string, subs int, memory bool) (fanOutRun, error) {
	gw := st.App(name)
	perConn := 100
	conns := (subs + perConn - 1) / perConn
	session := fmt.Sprintf("fanout-%d", time.Now().UnixNano())
	fmt.Printf("\nbench: fan-out of one event to %d subscriptions on %s (%d websockets x %d, from %d loopback addresses)\n", conns*perConn, name, conns, perConn, len(loopbackSources))
	settle := func() { http.Get(gw.AppURL() + "/metrics") } // a request, so the numbers below are of a settled process
	settle()
	before := rss(gw.AppCmd.Pid())
	liveBefore, liveOK := liveMemory(gw.AppURL(), pprofAddr)

	var mu sync.Mutex
	var got []time.Time
	var wg sync.WaitGroup
	var sockets []*websocket.Conn
	defer func() {
		for _, c := range sockets {
			c.CloseNow()
		}
	}()
	wsURL := strings.Replace(gw.AppURL(), "http://", "ws://", 1) + "/graphql"
	clients := make([]*http.Client, len(loopbackSources))
	for i, src := range loopbackSources {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
		clients[i] = &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	}
	for i := range conns {
		c, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}, HTTPClient: clients[i%len(clients)]})
		if err != nil {
			return fanOutRun{}, err
		}
		c.SetReadLimit(1 << 20)
		sockets = append(sockets, c)
		write := func(v any) error { b, _ := json.Marshal(v); return c.Write(ctx, websocket.MessageText, b) }
		if err := write(map[string]any{"type": "connection_init"}); err != nil {
			return fanOutRun{}, err
		}
		for j := range perConn {
			write(map[string]any{"id": strconv.Itoa(j), "type": "subscribe", "payload": map[string]any{
				"query": `subscription($s: ID) { conversationUpdated(sessionId: $s) { eventId } }`, "variables": map[string]string{"s": session}}})
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for n < perConn {
				_, b, err := c.Read(ctx)
				if err != nil {
					return
				}
				if strings.Contains(string(b), `"type":"next"`) {
					mu.Lock()
					got = append(got, time.Now())
					mu.Unlock()
					n++
				}
			}
		}()
	}
	// Wait until every subscription is open.
	if err := waitMetric(ctx, gw.AppURL()+"/metrics", 5*time.Minute, func(text string) bool {
		n, _ := metricSum(text, "daca_gateway_open_subscriptions", `topic="conversations"`)
		return int(n) == conns*perConn
	}); err != nil {
		return fanOutRun{}, fmt.Errorf("bench: subscriptions did not all open: %w", err)
	}
	settle()
	after := rss(gw.AppCmd.Pid())
	liveAfter, liveOK2 := liveMemory(gw.AppURL(), pprofAddr)
	ev, _ := json.Marshal(map[string]string{"user_id": "bench-user", "session_id": session, "event_type": contract.EventConversationUpdated,
		"user_message": "fan-out", "assistant_reply": "fan-out reply"})
	start := time.Now()
	if err := call(http.MethodPost, gw.SidecarURL()+"/v1.0/publish/gateway-pubsub/conversations", ev); err != nil {
		return fanOutRun{}, err
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
	}
	for _, c := range sockets {
		c.CloseNow()
	}
	sockets = nil
	// The gateway forgets the subscriptions before the next run.
	if err := waitMetric(ctx, gw.AppURL()+"/metrics", time.Minute, func(text string) bool {
		n, _ := metricSum(text, "daca_gateway_open_subscriptions", `topic="conversations"`)
		return n == 0
	}); err != nil {
		return fanOutRun{}, fmt.Errorf("bench: subscriptions not freed after the run: %w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	r := fanOutRun{subs: conns * perConn, delivered: len(got)}
	for _, t := range got {
		r.lat = append(r.lat, t.Sub(start))
	}
	slices.Sort(r.lat)
	if memory {
		r.perSub = float64(after-before) / float64(r.subs)
		if liveOK && liveOK2 {
			r.livePerSub = float64(liveAfter-liveBefore) / float64(r.subs)
		}
	}
	return r, nil
}

// liveMemory forces a garbage collection in the gateway at appURL through
// its pprof endpoint (pprofAddr; "": not measured) and returns the heap and
// stacks it then has in use, from its /metrics.
func liveMemory(appURL, pprofAddr string) (int64, bool) {
	if pprofAddr == "" {
		return 0, false
	}
	resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/heap?gc=1")
	if err != nil {
		return 0, false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false
	}
	resp, err = http.Get(appURL + "/metrics")
	if err != nil {
		return 0, false
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	heap, hok := metricSum(string(b), "go_memstats_heap_inuse_bytes", "")
	stack, sok := metricSum(string(b), "go_memstats_stack_inuse_bytes", "")
	return int64(heap + stack), hok && sok
}

// benchInvocation compares the gateway's two ways to its sidecar
// (BACKEND_INVOCATION): the sidecar's HTTP API and the go-sdk over its gRPC
// API (Dapr's gRPC-to-HTTP path), as memory(userId) through two gateways of
// the same stack, in alternating rounds, with the CPU per request of each
// gateway and of its sidecar.
func benchInvocation(ctx context.Context, st *stack.Stack, call func(method, url string, body []byte) error, reads int, levels []int) error {
	query, _ := json.Marshal(map[string]string{"query": `{ memory(userId: "bench-user") { name preferredStyle userSummary } }`})
	names := []string{"gateway", "gateway-grpc"}
	var paths []func() error
	for _, name := range names {
		url := st.App(name).AppURL() + "/graphql"
		paths = append(paths, func() error { return call(http.MethodPost, url, query) })
	}
	for _, p := range paths {
		load(p, 500, 16)
	}
	fmt.Println()
	fmt.Println("bench: service invocation paths, memory(userId) through a gateway on each (alternating rounds)")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients	path	req/s	p50	p99	gateway CPU/req	sidecar CPU/req	both	")
	for _, conc := range levels {
		n := reads
		if conc == 1 {
			n = max(reads/4, 50)
		}
		// Each path's CPU: its own gateway and that gateway's sidecar.
		ms2 := interleaved(paths, n, conc, func(p int) (int, int) {
			a := st.App(names[p])
			return a.AppCmd.Pid(), a.Daprd.Pid()
		})
		for i, m := range ms2 {
			if m.errs > 0 {
				return fmt.Errorf("bench: %d errors through %s", m.errs, names[i])
			}
			path := "http (sidecar HTTP API)"
			if i == 1 {
				path = "grpc (go-sdk, gRPC→HTTP)"
			}
			g, s := m.cpuPerReq(m.cpu), m.cpuPerReq(m.cpu2)
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%s\t%d µs\t%d µs\t%d µs\t\n", conc, path, m.rate(), ms(pct(m.lat, 50)), ms(pct(m.lat, 99)),
				g.Microseconds(), s.Microseconds(), (g + s).Microseconds())
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	tw.Flush()
	fmt.Println("CPU/req: CPU time of that gateway process, and of its sidecar, per request through it (/proc, 10 ms ticks)")
	return nil
}
