package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daca-go/daca/gateway/auth"
	"github.com/daca-go/daca/graph/graphtest"
	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/contract"
)

// Apollo Client's Accept headers: a subscription over HttpLink, a query
// with @defer.
const (
	acceptSubscription = `multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json`
	acceptDefer        = `multipart/mixed;deferSpec=20220824,application/json`
)

// multipartReader splits a multipart answer as Apollo Client's
// readMultipartBody does: on "\r\n--<boundary>", each part's body after
// its headers.
type multipartReader struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	parts []string
	ended bool
}

func (m *multipartReader) read(t *testing.T, body io.Reader, boundary string) {
	b := make([]byte, 32<<10)
	for {
		n, err := body.Read(b)
		m.mu.Lock()
		m.buf.Write(b[:n])
		for {
			s := m.buf.String()
			i := strings.Index(s, "\r\n--"+boundary)
			if i < 0 {
				break
			}
			if msg := s[:i]; strings.Contains(msg, "\r\n\r\n") {
				m.parts = append(m.parts, strings.TrimSpace(msg[strings.Index(msg, "\r\n\r\n"):]))
			}
			rest := s[i+len("\r\n--"+boundary):]
			if strings.HasPrefix(rest, "--") {
				m.ended = true
			}
			m.buf.Reset()
			m.buf.WriteString(rest)
		}
		m.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (m *multipartReader) snapshot() ([]string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.parts...), m.ended
}

func post(t *testing.T, ctx context.Context, url, accept, token, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/graphql", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestSubscriptionOverMultipart: Apollo's multipart subscription protocol —
// the bearer token checked first, a part per event ({"payload": ...}),
// heartbeats ({}) while quiet, the subscriber freed when the client goes,
// and a query sent the same way answered in one part.
func TestSubscriptionOverMultipart(t *testing.T) {
	g := &auth.Guard{Mode: "jwt", Verifier: staticVerifier{"tok-ana": {Subject: "ana"}}}
	s, h := newServer(graphtest.New(), Config{MultipartHeartbeat: 50 * time.Millisecond}, 0, g)
	srv := httptest.NewServer(h)
	defer srv.Close()
	sub := `{"query":"subscription { conversationUpdated(userId: \"ana\") { eventId userMessage } }"}`
	if resp := post(t, t.Context(), srv.URL, acceptSubscription, "forged", sub); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a forged token: %d; want 401", resp.StatusCode)
	}
	ctx, cancel := context.WithCancel(t.Context())
	resp := post(t, ctx, srv.URL, acceptSubscription, "tok-ana", sub)
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != `multipart/mixed;boundary="graphql";subscriptionSpec="1.0"` {
		t.Fatalf("Content-Type %q", ct)
	}
	var mr multipartReader
	go mr.read(t, resp.Body, "graphql")
	waitUntil(t, "the multipart subscription is open", func() bool { return s.hub.Conversations.Len() == 1 })
	waitUntil(t, "a heartbeat", func() bool { p, _ := mr.snapshot(); return len(p) > 0 && p[0] == "{}" })
	s.hub.Conversations.Publish(&model.ConversationEvent{EventID: "e1", UserID: "ana", SessionID: "s1", UserMessage: "over multipart", AssistantReply: "r"})
	var event map[string]any
	waitUntil(t, "the event's part", func() bool {
		parts, _ := mr.snapshot()
		for _, p := range parts {
			if strings.Contains(p, "over multipart") {
				return json.Unmarshal([]byte(p), &event) == nil
			}
		}
		return false
	})
	payload, _ := event["payload"].(map[string]any)
	data, _ := payload["data"].(map[string]any)
	if cu, _ := data["conversationUpdated"].(map[string]any); cu["eventId"] != "e1" {
		t.Fatalf("part %v; want {payload: {data: {conversationUpdated: ...}}}", event)
	}
	cancel()
	waitUntil(t, "the multipart subscriber freed", func() bool { return s.hub.Conversations.Len() == 0 })

	// A query asked for the same way: one part, then the end.
	resp = post(t, t.Context(), srv.URL, acceptSubscription, "tok-ana", `{"query":"{ health { status } }"}`)
	defer resp.Body.Close()
	var q multipartReader
	q.read(t, resp.Body, "graphql")
	parts, ended := q.snapshot()
	if len(parts) != 1 || !strings.Contains(parts[0], `{"payload":{"data":{"health":{"status":`) || !ended {
		t.Fatalf("a query over multipart: %q, ended %v", parts, ended)
	}
}

// TestMultipartSlowSubscriberDropped: a multipart subscriber that reads
// nothing is dropped like a websocket one, and its stream ends with an
// error part that says why (Apollo's transport error).
func TestMultipartSlowSubscriberDropped(t *testing.T) {
	s, h := newServer(graphtest.New(), Config{}, 4, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp := post(t, t.Context(), srv.URL, acceptSubscription, "", `{"query":"subscription { conversationUpdated(userId: \"ana\") { userMessage } }"}`)
	defer resp.Body.Close()
	waitUntil(t, "the multipart subscription is open", func() bool { return s.hub.Conversations.Len() == 1 })
	big := strings.Repeat("x", 64<<10) // fills the TCP buffers of a client that does not read
	for sent := 0; ; sent++ {
		if _, dropped := s.hub.Conversations.Stats(); dropped > 0 {
			break
		}
		if sent == 5000 {
			t.Fatal("the slow subscriber was never dropped")
		}
		s.hub.Conversations.Publish(&model.ConversationEvent{EventID: fmt.Sprint(sent), UserID: "ana", SessionID: "s", UserMessage: big, AssistantReply: "r"})
	}
	var mr multipartReader
	mr.read(t, resp.Body, "graphql") // to the end
	parts, ended := mr.snapshot()
	if len(parts) == 0 || !ended || !strings.Contains(parts[len(parts)-1], `"payload":null`) || !strings.Contains(parts[len(parts)-1], "too slow: 4 events unread") {
		last := ""
		if len(parts) > 0 {
			last = parts[len(parts)-1]
		}
		t.Fatalf("%d parts, ended %v, the last %.200q; want an error part that says why, then the end", len(parts), ended, last)
	}
}

// TestDefer: @defer over multipart/mixed (gqlgen's incremental delivery,
// the format Apollo Client reads) within GRAPHQL_MAX_DEFERRED; refused
// over a request that cannot receive the later parts, beyond the limit,
// and a subscription that asked for @defer's framing is refused rather
// than answered in the wrong one.
func TestDefer(t *testing.T) {
	f := graphtest.New()
	f.SessionList = map[string][]contract.SessionInfo{"ana": {{SessionID: "s1", MessageCount: 2}}}
	f.History = map[string][]contract.Entry{"s1": {{Role: "user", Content: "hi"}, {Role: "assistant", Content: "hello"}}}
	_, h := newServer(f, Config{MaxDeferred: 2}, 0, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	query := func(accept, q string) (int, string, string) {
		b, _ := json.Marshal(map[string]string{"query": q})
		resp := post(t, t.Context(), srv.URL, accept, "", string(b))
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
	}
	// A session list whose messages arrive after it.
	deferred := `{ sessions(userId: "ana") { sessionId ... @defer(label: "messages") { messages(last: 2) { content } } } }`
	_, ct, body := query(acceptDefer, deferred)
	first, later, _ := strings.Cut(body, `"hasNext":true`)
	if !strings.HasPrefix(ct, "multipart/mixed") || !strings.Contains(first, `{"data":{"sessions":[{"sessionId":"s1"`) ||
		!strings.Contains(later, `"incremental":[{"data":{"messages":[{"content":"hi"},{"content":"hello"}]},"label":"messages","path":["sessions",0]`) {
		t.Fatalf("a deferred fragment: %s %q", ct, body)
	}
	for _, tt := range []struct{ name, accept, query, want string }{
		{"over plain JSON", "application/json", deferred, "@defer needs a request that accepts multipart/mixed"},
		{"beyond the limit", acceptDefer, `{ sessions(userId: "ana") { ... @defer { messages { content } } ...M @defer ...M @defer } } fragment M on Session { messageCount }`, "the operation defers 3 fragments; at most 2"},
		{"a subscription in @defer's framing", acceptDefer, `subscription { conversationUpdated(userId: "ana") { userMessage } }`, "subscriptions need a websocket"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, body := query(tt.accept, tt.query)
			if !strings.Contains(body, tt.want) {
				t.Fatalf("%s; want %q", body, tt.want)
			}
		})
	}
}
