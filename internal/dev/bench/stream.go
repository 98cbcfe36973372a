package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/coder/websocket"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/llm/llmtest"
)

// Provider timing of the stream bench: the first token after this long,
// then a word every streamWordGap.
const (
	streamFirstToken = 100 * time.Millisecond
	streamWordGap    = 5 * time.Millisecond
	streamWords      = 40
)

// benchStream measures the live chat on a stack of its own whose
// chat-service talks to a local provider speaking the Chat Completions
// streaming format (llmtest): the time to first token through the gateway
// over the provider's own (what the gateway, Dapr and the workflow add),
// and one turn streamed to many subscribers.
func benchStream(ctx context.Context, rootDir string, turns, subscribers int) error {
	const key = "bench-provider-key"
	words := make([]string, streamWords)
	for i := range words {
		words[i] = "word" + strconv.Itoa(i)
	}
	prov := &llmtest.Provider{Key: key, FirstTokenDelay: streamFirstToken, TokenDelay: streamWordGap,
		Answer: func(context.Context, llmtest.Request) (llmtest.Reply, bool) {
			return llmtest.Reply{Content: strings.Join(words, " ")}, true
		}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: prov}
	go srv.Serve(ln)
	defer srv.Close()
	llmEnv := []string{"LOG_LEVEL=warn", "LLM_BASE_URL=http://" + ln.Addr().String() + "/v1", "LLM_MODEL=bench"}

	runDir, secrets, err := benchRunDir("daca-bench-stream-", key)
	if err != nil {
		return err
	}
	defer os.RemoveAll(runDir)
	fmt.Println("\nbench: starting a private stack for streaming (a local provider: first token after", streamFirstToken, "then a word every", streamWordGap.String()+")")
	st, err := stack.Start(ctx, stack.Config{
		Root: rootDir, RunDir: runDir, SecretsFile: secrets, Progress: os.Stdout, LogLevel: "warn",
		Apps: []stack.App{
			stack.Memory.App(llmEnv...),
			stack.Chat.App(llmEnv...),
			stack.Gateway.App("LOG_LEVEL=warn", "RATE_LIMIT_PER_MINUTE=0", "SUBSCRIBER_QUEUE=64"),
		},
	})
	if err != nil {
		return err
	}
	defer st.Stop()
	gw := st.App(contract.GatewayApp)
	wsURL := strings.Replace(gw.AppURL(), "http://", "ws://", 1) + "/graphql"
	start := func(text string) (string, time.Time, error) {
		t0 := time.Now()
		body, _ := json.Marshal(map[string]any{"query": `mutation($in: SendMessageInput!) { startChat(input: $in) { instanceId } }`,
			"variables": map[string]any{"in": map[string]any{"userId": "bench-stream", "text": text}}})
		resp, err := http.Post(gw.AppURL()+"/graphql", "application/json", strings.NewReader(string(body)))
		if err != nil {
			return "", t0, err
		}
		defer resp.Body.Close()
		var out struct {
			Data struct{ StartChat struct{ InstanceID string } }
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Data.StartChat.InstanceID == "" {
			return "", t0, fmt.Errorf("startChat: %v", err)
		}
		return out.Data.StartChat.InstanceID, t0, nil
	}
	// subscribe opens n chatStream subscriptions to the turn on one socket
	// and calls chunk for each chunk (done or not) as it arrives.
	subscribe := func(id string, n int, chunk func(sub int, done bool)) (*websocket.Conn, error) {
		c, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
		if err != nil {
			return nil, err
		}
		c.SetReadLimit(1 << 20)
		write := func(v any) error { b, _ := json.Marshal(v); return c.Write(ctx, websocket.MessageText, b) }
		if err := write(map[string]any{"type": "connection_init"}); err != nil {
			return nil, err
		}
		for j := range n {
			write(map[string]any{"id": strconv.Itoa(j), "type": "subscribe", "payload": map[string]any{
				"query": `subscription($id: ID!) { chatStream(instanceId: $id) { seq done } }`, "variables": map[string]string{"id": id}}})
		}
		go func() {
			for {
				_, b, err := c.Read(ctx)
				if err != nil {
					return
				}
				var m struct {
					ID      string
					Type    string
					Payload struct {
						Data   struct{ ChatStream struct{ Done bool } }
						Errors []any
					}
				}
				if json.Unmarshal(b, &m) != nil {
					continue
				}
				switch m.Type {
				case "next":
					if len(m.Payload.Errors) > 0 {
						fmt.Fprintf(os.Stderr, "bench: chatStream subscription %s: %s\n", m.ID, b)
						continue
					}
					sub, _ := strconv.Atoi(m.ID)
					chunk(sub, m.Payload.Data.ChatStream.Done)
				case "error":
					fmt.Fprintf(os.Stderr, "bench: chatStream subscription %s: %s\n", m.ID, b)
				}
			}
		}()
		return c, nil
	}

	// Time to first token, one turn at a time.
	var added []time.Duration
	for i := range turns + 3 {
		id, t0, err := start(fmt.Sprintf("ttft %d", i))
		if err != nil {
			return err
		}
		first, done := make(chan time.Time, 1), make(chan struct{})
		var once sync.Once
		c, err := subscribe(id, 1, func(_ int, d bool) {
			select {
			case first <- time.Now():
			default:
			}
			if d {
				once.Do(func() { close(done) })
			}
		})
		if err != nil {
			return err
		}
		var t1 time.Time
		select {
		case t1 = <-first:
		case <-time.After(time.Minute):
			return fmt.Errorf("bench: no chunk of turn %s within a minute", id)
		}
		select {
		case <-done:
		case <-time.After(time.Minute):
			return fmt.Errorf("bench: turn %s did not end within a minute", id)
		}
		c.CloseNow()
		s := prov.Streams()
		p := s[len(s)-1]
		if i >= 3 { // warm-up
			added = append(added, t1.Sub(t0)-p.FirstToken.Sub(p.Arrived))
		}
	}
	slices.Sort(added)

	// One turn, many subscribers: from the provider's last token to each
	// subscriber's last chunk.
	prov.FirstTokenDelay = 3 * time.Second // time to open the subscriptions
	id, _, err := start("to many subscribers")
	if err != nil {
		return err
	}
	perConn := 100
	conns := (subscribers + perConn - 1) / perConn
	var mu sync.Mutex
	var ends []time.Time
	var sockets []*websocket.Conn
	for range conns {
		c, err := subscribe(id, perConn, func(_ int, d bool) {
			if d {
				mu.Lock()
				ends = append(ends, time.Now())
				mu.Unlock()
			}
		})
		if err != nil {
			return err
		}
		sockets = append(sockets, c)
	}
	defer func() {
		for _, c := range sockets {
			c.CloseNow()
		}
	}()
	// Every subscriber's last chunk, or what came within a minute (the
	// table says how many).
	_ = waitMetric(ctx, gw.AppURL()+"/metrics", time.Minute, func(string) bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ends) == conns*perConn
	})
	s := prov.Streams()
	last := s[len(s)-1].LastToken
	mu.Lock()
	var lag []time.Duration
	for _, e := range ends {
		lag = append(lag, e.Sub(last))
	}
	mu.Unlock()
	slices.Sort(lag)

	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "streaming\tsamples\tp50\tp99\tmax\ttarget\t")
	verdict := "met"
	if pct(added, 50) > 50*time.Millisecond {
		verdict = "missed"
	}
	fmt.Fprintf(tw, "time to first token added by gateway, Dapr and workflow\t%d\t%s\t%s\t%s\t%s\t\n", len(added), ms(pct(added, 50)), ms(pct(added, 99)), ms(pct(added, 100)), "≤ 50 ms p50: "+verdict)
	fmt.Fprintf(tw, "last token to done, %d subscribers of one turn\t%d\t%s\t%s\t%s\t%s\t\n", conns*perConn, len(lag), ms(pct(lag, 50)), ms(pct(lag, 99)), ms(pct(lag, 100)), "reported")
	tw.Flush()
	return nil
}
