package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/99designs/gqlgen/client"
	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/daca-go/daca/gateway/auth"
	"github.com/daca-go/daca/gateway/backend"
	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/memory"
	"github.com/daca-go/daca/internal/ratelimit"
)

// Everything a subscription holds must be gone at the end; the HTTP
// client's idle keep-alive connections are not the server's.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"))
}

// fake is a Backend in memory; err, when set, is returned by every call.
type fake struct {
	mu       sync.Mutex
	profiles map[string]memory.Profile
	history  map[string][]memory.Entry
	sessions map[string][]memory.SessionInfo
	runs     map[string]*backend.Run
	err      error
	lastIn   backend.ChatInput
	batches  [][]string // the session ids of each Conversations call
	convErr  error      // Conversations fails with it
}

func newFake() *fake {
	ts := time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)
	reply := "hi ana"
	return &fake{
		profiles: map[string]memory.Profile{"ana": {Name: "Ana", PreferredStyle: "formal", UserSummary: "likes Go"}},
		history:  map[string][]memory.Entry{"s1": {{Role: "user", Content: "q", Timestamp: ts}, {Role: "assistant", Content: "a", Timestamp: ts}}},
		sessions: map[string][]memory.SessionInfo{"ana": {{SessionID: "s1", UpdatedAt: ts, MessageCount: 2, LastMessage: &memory.Entry{Role: "assistant", Content: "a", Timestamp: ts}}}},
		runs:     map[string]*backend.Run{"chat-1": {InstanceID: "chat-1", Status: "COMPLETED", UserID: "ana", SessionID: "s1", Reply: &reply, Timestamp: &ts}},
	}
}

func (f *fake) e() error { f.mu.Lock(); defer f.mu.Unlock(); return f.err }

func (f *fake) Memory(_ context.Context, u string) (memory.Profile, error) {
	if p, ok := f.profiles[u]; ok {
		return p, f.e()
	}
	return memory.DefaultProfile(u), f.e()
}
func (f *fake) InitializeMemory(_ context.Context, u string, p memory.Profile) (memory.Profile, error) {
	return p, f.e()
}
func (f *fake) Conversation(_ context.Context, s string) ([]memory.Entry, error) {
	return f.history[s], f.e()
}
func (f *fake) Conversations(_ context.Context, ids []string, last int) (map[string][]memory.Entry, error) {
	f.mu.Lock()
	f.batches = append(f.batches, ids)
	f.mu.Unlock()
	out := map[string][]memory.Entry{}
	for _, id := range ids {
		h := f.history[id]
		if last > 0 && len(h) > last {
			h = h[len(h)-last:]
		}
		out[id] = append([]memory.Entry{}, h...)
	}
	if f.convErr != nil {
		return nil, f.convErr
	}
	return out, f.e()
}
func (f *fake) Sessions(_ context.Context, u string) ([]memory.SessionInfo, error) {
	return f.sessions[u], f.e()
}
func (f *fake) ForgetUser(context.Context, string) (int, error)          { return 1, f.e() }
func (f *fake) DeleteConversation(context.Context, string) (bool, error) { return true, f.e() }
func (f *fake) SendMessage(_ context.Context, in backend.ChatInput) (backend.Reply, error) {
	f.mu.Lock()
	f.lastIn = in
	f.mu.Unlock()
	return backend.Reply{UserID: in.UserID, SessionID: "s9", Reply: "re: " + in.Text, InstanceID: "chat-9", Status: "COMPLETED",
		Timestamp: time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)}, f.e()
}
func (f *fake) StartChat(_ context.Context, in backend.ChatInput) (backend.Run, error) {
	return backend.Run{InstanceID: "chat-2", Status: "PENDING", UserID: in.UserID, SessionID: "s2"}, f.e()
}
func (f *fake) ChatRun(_ context.Context, id string) (*backend.Run, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs[id], f.err
}
func (f *fake) Health(context.Context) backend.Health {
	return backend.Health{Sidecar: "ok", Apps: map[string]string{"chat-service": "ok", "agent-memory-service": "ok"}, LLM: "offline"}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newServer(f *fake, cfg Config) (*Server, http.Handler) {
	s := New(cfg, f, quiet())
	return s, s.Routes(func(context.Context) error { return nil })
}

func TestResolvers(t *testing.T) {
	f := newFake()
	_, h := newServer(f, Config{})
	c := client.New(h, client.Path("/graphql"))
	tests := []struct {
		name, query string
		want        string
	}{
		{"memory", `{ memory(userId: "ana") { userId name preferredStyle userSummary } }`,
			`{"memory":{"userId":"ana","name":"Ana","preferredStyle":"formal","userSummary":"likes Go"}}`},
		{"memory of a stranger", `{ memory(userId: "zed") { userSummary } }`, `{"memory":{"userSummary":"zed is a new user."}}`},
		{"conversation last 1", `{ conversation(sessionId: "s1", last: 1) { sessionId messages { role content timestamp } } }`,
			`{"conversation":{"sessionId":"s1","messages":[{"role":"ASSISTANT","content":"a","timestamp":"2026-11-29T03:00:00Z"}]}}`},
		{"sessions", `{ sessions(userId: "ana") { sessionId messageCount lastMessage { role } } }`,
			`{"sessions":[{"sessionId":"s1","messageCount":2,"lastMessage":{"role":"ASSISTANT"}}]}`},
		{"sessions with messages", `{ sessions(userId: "ana") { sessionId messages(last: 1) { content } } }`,
			`{"sessions":[{"sessionId":"s1","messages":[{"content":"a"}]}]}`},
		{"chatRun", `{ chatRun(instanceId: "chat-1") { instanceId status reply sessionId } }`,
			`{"chatRun":{"instanceId":"chat-1","status":"COMPLETED","reply":"hi ana","sessionId":"s1"}}`},
		{"unknown chatRun", `{ chatRun(instanceId: "chat-x") { status } }`, `{"chatRun":null}`},
		{"health", `{ health { status gateway sidecar llm authMode backends { appId status } } }`,
			`{"health":{"status":"ok","gateway":"ok","sidecar":"ok","llm":"offline","authMode":"none","backends":[{"appId":"chat-service","status":"ok"},{"appId":"agent-memory-service","status":"ok"}]}}`},
		{"sendMessage", `mutation { sendMessage(input: {userId: "ana", text: "hello", idempotencyKey: "k"}) { reply instanceId sessionId status timestamp } }`,
			`{"sendMessage":{"reply":"re: hello","instanceId":"chat-9","sessionId":"s9","status":"COMPLETED","timestamp":"2026-11-29T03:00:00Z"}}`},
		{"startChat", `mutation { startChat(input: {userId: "ana", text: "hello"}) { instanceId status } }`,
			`{"startChat":{"instanceId":"chat-2","status":"PENDING"}}`},
		{"initializeMemory", `mutation { initializeMemory(userId: "ana", input: {name: "A"}) { name } }`, `{"initializeMemory":{"name":"A"}}`},
		{"forgetUser", `mutation { forgetUser(userId: "ana") { userId sessionsDeleted } }`, `{"forgetUser":{"userId":"ana","sessionsDeleted":1}}`},
		{"deleteConversation", `mutation { deleteConversation(sessionId: "s1") }`, `{"deleteConversation":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.RawPost(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Errors != nil {
				t.Fatalf("errors: %s", resp.Errors)
			}
			got, _ := json.Marshal(resp.Data)
			var w any
			json.Unmarshal([]byte(tt.want), &w)
			want, _ := json.Marshal(w)
			if string(got) != string(want) {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
	if f.lastIn.IdempotencyKey != "k" {
		t.Fatalf("idempotency key not passed: %+v", f.lastIn)
	}
}

// TestSessionMessagesBatched checks that the messages of many sessions are
// read in one backend call per operation (no N+1), and that a failing batch
// fails each field with the backend's code.
func TestSessionMessagesBatched(t *testing.T) {
	f := newFake()
	ts := time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)
	const n = 40
	for i := range n {
		id := fmt.Sprintf("s%d", i+10)
		f.sessions["ana"] = append(f.sessions["ana"], memory.SessionInfo{SessionID: id, UpdatedAt: ts, MessageCount: 1})
		f.history[id] = []memory.Entry{{Role: "user", Content: id, Timestamp: ts}}
	}
	// A wide window: the batches below do not depend on how fast this
	// machine starts goroutines.
	_, h := newServer(f, Config{LoaderWait: 200 * time.Millisecond})
	c := client.New(h, client.Path("/graphql"))
	var resp struct {
		Sessions []struct {
			SessionID string
			Messages  []struct{ Content string }
		}
	}
	c.MustPost(`{ sessions(userId: "ana") { sessionId messages { content } } }`, &resp)
	if len(resp.Sessions) != n+1 {
		t.Fatalf("%d sessions; want %d", len(resp.Sessions), n+1)
	}
	for _, s := range resp.Sessions[1:] {
		if len(s.Messages) != 1 || s.Messages[0].Content != s.SessionID {
			t.Fatalf("session %s has messages %+v", s.SessionID, s.Messages)
		}
	}
	if len(f.batches) != 1 || len(f.batches[0]) != n+1 {
		t.Fatalf("backend calls: %d (sizes %v); want 1 call with %d ids", len(f.batches), f.batches, n+1)
	}
	// A second operation gets fresh loaders: nothing is cached across requests.
	c.MustPost(`{ sessions(userId: "ana") { messages(last: 1) { content } } }`, &resp)
	if len(f.batches) != 2 {
		t.Fatalf("second request: %d backend calls in all; want 2", len(f.batches))
	}
	// More sessions than one batch may hold: batches of at most 100 ids.
	for i := range 110 {
		id := fmt.Sprintf("t%d", i)
		f.sessions["ana"] = append(f.sessions["ana"], memory.SessionInfo{SessionID: id, UpdatedAt: ts, MessageCount: 1})
		f.history[id] = []memory.Entry{{Role: "user", Content: id, Timestamp: ts}}
	}
	f.batches = nil
	c.MustPost(`{ sessions(userId: "ana") { sessionId messages { content } } }`, &resp)
	total := 0
	for _, b := range f.batches {
		if len(b) > memory.MaxBatch {
			t.Fatalf("a batch of %d ids; at most %d", len(b), memory.MaxBatch)
		}
		total += len(b)
	}
	if len(resp.Sessions) != n+111 || len(f.batches) != 2 || total != n+111 {
		t.Fatalf("%d sessions in %d batches (%d ids); want %d in 2", len(resp.Sessions), len(f.batches), total, n+111)
	}
	f.convErr = apperr.Wrap(apperr.Unavailable, errors.New("dial tcp 127.0.0.1:50001"), "agent-memory-service is unavailable")
	if code, _, msg := errCode(t, h, `{ sessions(userId: "ana") { messages { content } } }`); code != "UNAVAILABLE" || msg != "agent-memory-service is unavailable" {
		t.Fatalf("failed batch: %q %q; want UNAVAILABLE", code, msg)
	}
	f.convErr = nil
	if code, _, msg := errCode(t, h, `{ sessions(userId: "ana") { messages(last: -1) { content } } }`); code != "BAD_USER_INPUT" {
		t.Fatalf("negative last: %q %q", code, msg)
	}
}

func errCode(t *testing.T, h http.Handler, query string, opts ...client.Option) (string, map[string]any, string) {
	t.Helper()
	resp, err := client.New(h, client.Path("/graphql")).RawPost(query, opts...)
	if err != nil {
		t.Fatal(err)
	}
	var errs []struct {
		Message    string         `json:"message"`
		Extensions map[string]any `json:"extensions"`
	}
	json.Unmarshal(resp.Errors, &errs)
	if len(errs) == 0 {
		return "", nil, ""
	}
	return fmt.Sprint(errs[0].Extensions["code"]), errs[0].Extensions, errs[0].Message
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		code    string
		message string
	}{
		{"bad input with the backend's detail", apperr.New(apperr.Invalid, "Message text cannot be empty"), "BAD_USER_INPUT", "Message text cannot be empty"},
		{"not found", apperr.New(apperr.NotFound, "not found"), "NOT_FOUND", "not found"},
		{"unauthenticated", apperr.New(apperr.Unauthenticated, "who are you"), "UNAUTHENTICATED", "who are you"},
		{"forbidden", apperr.New(apperr.Forbidden, "no"), "FORBIDDEN", "no"},
		{"rate limited", &apperr.Error{Code: apperr.RateLimited, Message: "slow down", RetryAfter: 1500 * time.Millisecond}, "RATE_LIMITED", "slow down"},
		{"unavailable hides the cause", apperr.Wrap(apperr.Unavailable, fmt.Errorf("dial tcp 127.0.0.1:3502: token abc"), "chat-service is unavailable"), "UNAVAILABLE", "chat-service is unavailable"},
		{"a bug hides everything", fmt.Errorf("nil pointer at /src/x.go:12 with sk-secret"), "INTERNAL", "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			f.err = tt.err
			_, h := newServer(f, Config{})
			code, ext, msg := errCode(t, h, `{ memory(userId: "ana") { name } }`)
			if code != tt.code || msg != tt.message {
				t.Fatalf("code %s message %q; want %s %q", code, msg, tt.code, tt.message)
			}
			if tt.code == "RATE_LIMITED" && ext["retryAfter"] != float64(2) {
				t.Fatalf("retryAfter = %v", ext["retryAfter"])
			}
		})
	}
}

func TestInputValidation(t *testing.T) {
	_, h := newServer(newFake(), Config{})
	tests := []struct{ name, query, msg string }{
		{"blank text", `mutation { sendMessage(input: {userId: "ana", text: "  "}) { reply } }`, "Message text cannot be empty"},
		{"key injection", `mutation { sendMessage(input: {userId: "a||b", text: "x"}) { reply } }`, "userId must match"},
		{"bad session", `{ conversation(sessionId: "../x") { sessionId } }`, "sessionId must match"},
		{"negative last", `{ conversation(sessionId: "s1", last: -1) { sessionId } }`, "last must not be negative"},
		{"too long", `mutation { sendMessage(input: {userId: "ana", text: "` + strings.Repeat("x", 17<<10) + `"}) { reply } }`, "longer than"},
		{"subscription without filter", `subscription { conversationUpdated { eventId } }`, "give sessionId"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.HasPrefix(tt.query, "subscription") {
				return // covered over websocket below
			}
			code, _, msg := errCode(t, h, tt.query)
			if code != "BAD_USER_INPUT" || !strings.Contains(msg, tt.msg) {
				t.Fatalf("%s %q", code, msg)
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	_, h := newServer(newFake(), Config{Turns: ratelimit.New(1, 2)})
	q := `mutation { sendMessage(input: {userId: "ana", text: "x"}) { reply } }`
	for i := range 2 {
		if code, _, _ := errCode(t, h, q); code != "" {
			t.Fatalf("message %d refused: %s", i, code)
		}
	}
	code, ext, _ := errCode(t, h, q)
	if code != "RATE_LIMITED" || ext["retryAfter"] == nil {
		t.Fatalf("third message: %s %v", code, ext)
	}
	if code, _, _ := errCode(t, h, strings.Replace(q, "ana", "bo", 1)); code != "" {
		t.Fatalf("another user limited: %s", code)
	}
}

func TestJWTAuthorisation(t *testing.T) {
	f := newFake()
	g := &auth.Guard{Mode: "jwt", Verifier: staticVerifier{"tok-ana": {Subject: "ana"}, "tok-admin": {Subject: "root", Admin: true}}}
	_, h := newServer(f, Config{Guard: g, AuthMode: "jwt"})
	bearer := func(tok string) client.Option { return client.AddHeader("Authorization", "Bearer "+tok) }
	tests := []struct {
		name, query string
		opts        []client.Option
		code        string
	}{
		{"anonymous", `{ memory(userId: "ana") { name } }`, nil, "UNAUTHENTICATED"},
		{"own memory", `{ memory(userId: "ana") { name } }`, []client.Option{bearer("tok-ana")}, ""},
		{"someone else's memory", `{ memory(userId: "bo") { name } }`, []client.Option{bearer("tok-ana")}, "FORBIDDEN"},
		{"admin reads anyone", `{ memory(userId: "bo") { name } }`, []client.Option{bearer("tok-admin")}, ""},
		{"send as someone else", `mutation { sendMessage(input: {userId: "bo", text: "x"}) { reply } }`, []client.Option{bearer("tok-ana")}, "FORBIDDEN"},
		{"own session", `{ conversation(sessionId: "s1") { sessionId } }`, []client.Option{bearer("tok-ana")}, ""},
		{"foreign session", `{ conversation(sessionId: "s-of-bo") { sessionId } }`, []client.Option{bearer("tok-ana")}, "FORBIDDEN"},
		{"own run", `{ chatRun(instanceId: "chat-1") { status } }`, []client.Option{bearer("tok-ana")}, ""},
		{"health is open", `{ health { authMode } }`, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, msg := errCode(t, h, tt.query, tt.opts...)
			if code != tt.code {
				t.Fatalf("code %q (%s); want %q", code, msg, tt.code)
			}
		})
	}
	// An invalid token is refused with 401 before any resolver runs.
	req := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(`{"query":"{ health { status } }"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer forged")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "UNAUTHENTICATED") {
		t.Fatalf("forged token: %d %s", w.Code, w.Body)
	}
}

type staticVerifier map[string]auth.Identity

func (v staticVerifier) Verify(_ context.Context, raw string) (auth.Identity, error) {
	if id, ok := v[raw]; ok {
		return id, nil
	}
	return auth.Identity{}, apperr.New(apperr.Unauthenticated, "bad token")
}

// publishEvent posts an event to the gateway as its sidecar would.
func publishEvent(t *testing.T, url, topic, id string, data any) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"id": id, "time": time.Now().UTC(), "topic": topic, "data": data})
	resp, err := http.Post(url+"/events/"+topic, "application/cloudevents+json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "SUCCESS") {
		t.Fatalf("event answer %s", body)
	}
}

type wsConn struct {
	t *testing.T
	c *websocket.Conn
}

func wsDial(t *testing.T, url, proto string, init map[string]any) *wsConn {
	t.Helper()
	c, _, err := websocket.Dial(t.Context(), strings.Replace(url, "http", "ws", 1)+"/graphql", &websocket.DialOptions{Subprotocols: []string{proto}})
	if err != nil {
		t.Fatal(err)
	}
	w := &wsConn{t, c}
	w.send(map[string]any{"type": "connection_init", "payload": init})
	return w
}

func (w *wsConn) send(v any) {
	b, _ := json.Marshal(v)
	if err := w.c.Write(context.Background(), websocket.MessageText, b); err != nil {
		w.t.Fatal(err)
	}
}

func (w *wsConn) read(types ...string) map[string]any {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		_, b, err := w.c.Read(ctx)
		if err != nil {
			w.t.Fatalf("read: %v", err)
		}
		var m map[string]any
		json.Unmarshal(b, &m)
		for _, t := range types {
			if m["type"] == t {
				return m
			}
		}
	}
}

func TestSubscriptionFanOutAndCleanup(t *testing.T) {
	f := newFake()
	s, h := newServer(f, Config{SubscriberQueue: 4})
	srv := httptest.NewServer(h)
	defer srv.Close()

	ws := wsDial(t, srv.URL, "graphql-transport-ws", nil)
	ws.read("connection_ack")
	ws.send(map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{"query": `subscription { conversationUpdated(userId: "ana") { eventId sessionId userMessage } }`}})
	ws.send(map[string]any{"id": "2", "type": "subscribe", "payload": map[string]any{"query": `subscription { memoryUpdated(userId: "ana") { userSummary } }`}})
	ws.send(map[string]any{"id": "3", "type": "subscribe", "payload": map[string]any{"query": `subscription { conversationUpdated { eventId } }`}})
	if m := ws.read("error", "next"); m["id"] != "3" || !strings.Contains(fmt.Sprint(m), "give sessionId") {
		t.Fatalf("unfiltered subscription: %v", m)
	}
	waitFor(t, func() bool { return s.Conversations.Len() == 1 && s.Memories.Len() == 1 })
	publishEvent(t, srv.URL, "conversations", "e0", map[string]string{"user_id": "bo", "session_id": "x", "event_type": "ConversationUpdated", "user_message": "not for ana", "assistant_reply": "r"})
	publishEvent(t, srv.URL, "conversations", "e1", map[string]string{"user_id": "ana", "session_id": "s1", "event_type": "ConversationUpdated", "user_message": "for ana", "assistant_reply": "r"})
	publishEvent(t, srv.URL, "memory-updates", "m1", map[string]string{"user_id": "ana", "session_id": "s1", "user_summary": "new summary"})
	// The two subscriptions deliver independently: take both, in any order.
	byID := map[any]map[string]any{}
	for range 2 {
		m := ws.read("next")
		byID[m["id"]] = m
	}
	if m := byID["1"]; !strings.Contains(fmt.Sprint(m), "for ana") || strings.Contains(fmt.Sprint(m), "not for ana") {
		t.Fatalf("conversation event = %v", m)
	}
	if m := byID["2"]; !strings.Contains(fmt.Sprint(m), "new summary") {
		t.Fatalf("memory event = %v", m)
	}
	// A stale event (from before the gateway started) is not pushed.
	b, _ := json.Marshal(map[string]any{"id": "old", "time": time.Now().Add(-time.Hour), "data": map[string]string{"user_id": "ana", "session_id": "s1", "event_type": "ConversationUpdated", "user_message": "old", "assistant_reply": "r"}})
	http.Post(srv.URL+"/events/conversations", "application/json", strings.NewReader(string(b)))
	publishEvent(t, srv.URL, "conversations", "e2", map[string]string{"user_id": "ana", "session_id": "s1", "event_type": "ConversationUpdated", "user_message": "fresh", "assistant_reply": "r"})
	if m := ws.read("next"); !strings.Contains(fmt.Sprint(m), "fresh") {
		t.Fatalf("after a stale event got %v", m)
	}
	ws.c.Close(websocket.StatusNormalClosure, "")
	waitFor(t, func() bool { return s.Conversations.Len() == 0 && s.Memories.Len() == 0 })
}

func TestThousandSubscribeCyclesBackToBaseline(t *testing.T) {
	s, h := newServer(newFake(), Config{})
	srv := httptest.NewServer(h)
	defer srv.Close()
	ws := wsDial(t, srv.URL, "graphql-transport-ws", nil)
	ws.read("connection_ack")
	// Warm up one cycle, then measure.
	cycle := func(i int) {
		id := fmt.Sprint(i)
		ws.send(map[string]any{"id": id, "type": "subscribe", "payload": map[string]any{"query": `subscription { memoryUpdated(userId: "ana") { userSummary } }`}})
		ws.send(map[string]any{"id": id, "type": "complete"})
	}
	cycle(0)
	waitFor(t, func() bool { return s.Memories.Len() == 0 })
	before := settledGoroutines()
	for i := 1; i <= 1000; i++ {
		cycle(i)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Memories.Len() != 0 || runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("after 1,000 cycles: %d subscribers, %d goroutines (baseline %d)\n%s", s.Memories.Len(), runtime.NumGoroutine(), before, buf[:n])
		}
		time.Sleep(5 * time.Millisecond)
	}
	ws.c.Close(websocket.StatusNormalClosure, "")
}

// settledGoroutines returns the goroutine count once it has not changed for
// 200 ms (goroutines of earlier tests may still be winding down).
func settledGoroutines() int {
	n, same := runtime.NumGoroutine(), 0
	for same < 20 {
		time.Sleep(10 * time.Millisecond)
		if m := runtime.NumGoroutine(); m == n {
			same++
		} else {
			n, same = m, 0
		}
	}
	return n
}

func TestWebsocketAuth(t *testing.T) {
	g := &auth.Guard{Mode: "jwt", Verifier: staticVerifier{"tok-ana": {Subject: "ana"}}}
	_, h := newServer(newFake(), Config{Guard: g, AuthMode: "jwt"})
	srv := httptest.NewServer(h)
	defer srv.Close()
	tests := []struct {
		name string
		init map[string]any
		ok   bool
	}{
		{"no token", nil, false},
		{"bad token", map[string]any{"Authorization": "Bearer forged"}, false},
		{"good token", map[string]any{"Authorization": "Bearer tok-ana"}, true},
		{"token field", map[string]any{"token": "tok-ana"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := wsDial(t, srv.URL, "graphql-transport-ws", tt.init)
			defer ws.c.CloseNow()
			if tt.ok {
				ws.read("connection_ack")
				ws.send(map[string]any{"id": "x", "type": "subscribe", "payload": map[string]any{"query": `subscription { memoryUpdated(userId: "bo") { userSummary } }`}})
				m := ws.read("error", "next")
				if !strings.Contains(fmt.Sprint(m), "FORBIDDEN") {
					t.Fatalf("subscribing to another user: %v", m)
				}
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for {
				if _, _, err := ws.c.Read(ctx); err != nil {
					if websocket.CloseStatus(err) != 4403 {
						t.Fatalf("closed with %v; want 4403", err)
					}
					return
				}
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMetrics(t *testing.T) {
	f := newFake()
	_, h := newServer(f, Config{})
	c := client.New(h, client.Path("/graphql"))
	c.RawPost(`{ memory(userId: "ana") { name } }`)
	c.RawPost(`{ memory(userId: "a||b") { name } }`)
	c.RawPost(`mutation { sendMessage(input: {userId: "ana", text: "x"}) { reply } }`)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := w.Body.String()
	for _, want := range []string{
		`daca_gateway_graphql_requests_total{operation="memory",type="query"} 2`,
		`daca_gateway_graphql_requests_total{operation="sendMessage",type="mutation"} 1`,
		`daca_gateway_graphql_errors_total{code="BAD_USER_INPUT",operation="memory"} 1`,
		`daca_gateway_graphql_duration_seconds_count{operation="sendMessage",type="mutation"} 1`,
		`daca_gateway_open_subscriptions{topic="conversations"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// GraphQL over HTTP: the media type the client asks for, and the spec's
// status codes for it.
func TestGraphQLOverHTTP(t *testing.T) {
	_, h := newServer(newFake(), Config{})
	tests := []struct {
		name, method, body, accept, ctype string
		status                            int
		wantType                          string
	}{
		{"json ok", "POST", `{"query":"{ health { gateway } }"}`, "application/json", "application/json", 200, "application/json"},
		{"graphql-response+json ok", "POST", `{"query":"{ health { gateway } }"}`, "application/graphql-response+json", "application/json", 200, "application/graphql-response+json"},
		{"graphql-response+json invalid", "POST", `{"query":"{ nope }"}`, "application/graphql-response+json", "application/json", 400, "application/graphql-response+json"},
		{"graphql-response+json unparsable", "POST", `{"query":"{"}`, "application/graphql-response+json", "application/json", 400, "application/graphql-response+json"},
		{"GET query", "GET", "", "application/json", "", 200, "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := "/graphql"
			if tt.method == "GET" {
				target += "?query=" + "%7B%20health%20%7B%20gateway%20%7D%20%7D"
			}
			req := httptest.NewRequest(tt.method, target, strings.NewReader(tt.body))
			req.Header.Set("Accept", tt.accept)
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tt.status || !strings.HasPrefix(w.Header().Get("Content-Type"), tt.wantType) {
				t.Fatalf("%d %s %s; want %d %s", w.Code, w.Header().Get("Content-Type"), w.Body, tt.status, tt.wantType)
			}
		})
	}
}

// BenchmarkMemoryQuery measures the gateway's own cost of a query (HTTP,
// parsing, validation, limits, metrics, resolver) with the backend faked.
func BenchmarkMemoryQuery(b *testing.B) {
	_, h := newServer(newFake(), Config{})
	body := `{"query":"{ memory(userId: \"ana\") { name preferredStyle userSummary } }"}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}

// closeCode waits for the server to close c and returns the close code (-1
// for a closure without a close frame). It fails the test if c stays open.
func closeCode(t *testing.T, c *websocket.Conn) websocket.StatusCode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if _, _, err := c.Read(ctx); err != nil {
			if ctx.Err() != nil {
				t.Fatal("the server did not close the connection within 10s")
			}
			return websocket.CloseStatus(err)
		}
	}
}

func TestWebsocketProtocolClosures(t *testing.T) {
	_, h := newServer(newFake(), Config{KeepAlive: 200 * time.Millisecond, InitTimeout: 300 * time.Millisecond})
	srv := httptest.NewServer(h)
	defer srv.Close()
	t.Run("second connection_init closes with 4429", func(t *testing.T) {
		ws := wsDial(t, srv.URL, "graphql-transport-ws", nil)
		defer ws.c.CloseNow()
		ws.read("connection_ack")
		ws.send(map[string]any{"type": "connection_init"})
		if c := closeCode(t, ws.c); c != 4429 {
			t.Fatalf("close %d; want 4429", c)
		}
	})
	t.Run("no connection_init closes with 4408", func(t *testing.T) {
		c, _, err := websocket.Dial(t.Context(), strings.Replace(srv.URL, "http", "ws", 1)+"/graphql", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if code := closeCode(t, c); code != 4408 {
			t.Fatalf("close %d; want 4408", code)
		}
	})
	t.Run("a peer that never answers ping is closed", func(t *testing.T) {
		ws := wsDial(t, srv.URL, "graphql-transport-ws", nil)
		defer ws.c.CloseNow()
		ws.read("connection_ack")
		ws.read("ping") // and never pong
		closeCode(t, ws.c)
	})
	t.Run("legacy graphql-ws gets ka", func(t *testing.T) {
		ws := wsDial(t, srv.URL, "graphql-ws", nil)
		defer ws.c.CloseNow()
		ws.read("connection_ack")
		ws.read("ka")
	})
}

// TestSlowSubscriberClosedWithReason: a client that stops reading is
// dropped once its buffer is full; its socket is closed with 1013 and a
// reason (no silent complete first), while a client that reads gets every
// event.
func TestSlowSubscriberClosedWithReason(t *testing.T) {
	for _, tt := range []struct{ proto, subscribe, next string }{
		{"graphql-transport-ws", "subscribe", "next"},
		{"graphql-ws", "start", "data"},
	} {
		t.Run(tt.proto, func(t *testing.T) {
			s, h := newServer(newFake(), Config{SubscriberQueue: 4})
			srv := httptest.NewServer(h)
			defer srv.Close()
			sub := func() *wsConn {
				ws := wsDial(t, srv.URL, tt.proto, nil)
				ws.c.SetReadLimit(1 << 20)
				ws.read("connection_ack")
				ws.send(map[string]any{"id": "1", "type": tt.subscribe, "payload": map[string]any{"query": `subscription { conversationUpdated(userId: "ana") { userMessage } }`}})
				return ws
			}
			slow, fast := sub(), sub()
			defer slow.c.CloseNow()
			defer fast.c.CloseNow()
			waitFor(t, func() bool { return s.Conversations.Len() == 2 })
			got := make(chan struct{})
			go func() {
				for {
					_, b, err := fast.c.Read(context.Background())
					if err != nil {
						return
					}
					if strings.Contains(string(b), `"`+tt.next+`"`) {
						got <- struct{}{}
					}
				}
			}()
			big := strings.Repeat("x", 64<<10) // fills the slow client's TCP buffers quickly
			sent := 0
			for _, dropped := s.Conversations.Stats(); dropped == 0; _, dropped = s.Conversations.Stats() {
				if sent == 5000 {
					t.Fatal("the slow subscriber was never dropped")
				}
				s.Conversations.Publish(&model.ConversationEvent{EventID: fmt.Sprint(sent), UserID: "ana", SessionID: "s", UserMessage: big, AssistantReply: "r"})
				sent++
				select { // the reading client keeps up, event by event
				case <-got:
				case <-time.After(10 * time.Second):
					t.Fatalf("the reading client did not get event %d", sent)
				}
			}
			if n := s.Conversations.Len(); n != 1 {
				t.Fatalf("%d subscribers after the drop; want the reading one", n)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for {
				_, b, err := slow.c.Read(ctx)
				if err != nil {
					var ce websocket.CloseError
					if !errors.As(err, &ce) || ce.Code != closeTryAgainLater || !strings.Contains(ce.Reason, "too slow: 4 events unread") {
						t.Fatalf("slow client closed with %v; want 1013 and a reason", err)
					}
					break
				}
				if strings.Contains(string(b), `"complete"`) || strings.Contains(string(b), `"error"`) {
					t.Fatalf("slow client got %.80s before the close; want events and keepalives only", b)
				}
			}
			s.Conversations.Publish(&model.ConversationEvent{EventID: "after", UserID: "ana", SessionID: "s", UserMessage: "after", AssistantReply: "r"})
			select {
			case <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("the reading client stopped getting events after the drop")
			}
		})
	}
}

// TestShutdownClosesWebsockets: at shutdown every websocket, of either
// protocol, is closed with 1001 and a reason, and CloseWebsockets returns
// once their handlers are done.
func TestShutdownClosesWebsockets(t *testing.T) {
	s, h := newServer(newFake(), Config{})
	srv := httptest.NewServer(h)
	defer srv.Close()
	var clients []*wsConn
	for _, p := range []struct{ proto, subscribe string }{{"graphql-transport-ws", "subscribe"}, {"graphql-ws", "start"}} {
		ws := wsDial(t, srv.URL, p.proto, nil)
		defer ws.c.CloseNow()
		ws.read("connection_ack")
		ws.send(map[string]any{"id": "1", "type": p.subscribe, "payload": map[string]any{"query": `subscription { memoryUpdated(userId: "ana") { userSummary } }`}})
		clients = append(clients, ws)
	}
	waitFor(t, func() bool { return s.Memories.Len() == 2 })
	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.CloseWebsockets(ctx)
		close(done)
	}()
	for _, ws := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		for err == nil {
			_, _, err = ws.c.Read(ctx)
		}
		cancel()
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != closeGoingAway || !strings.Contains(ce.Reason, "shutting down") {
			t.Fatalf("closed with %v; want 1001 and a reason", err)
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("CloseWebsockets did not return")
	}
	waitFor(t, func() bool { return s.Memories.Len() == 0 })
	s.CloseWebsockets(t.Context()) // nothing open: returns at once
}

func TestBodyErrorNeverQuotesTheBody(t *testing.T) {
	tests := []struct {
		body       string
		status     int
		want, code string
	}{
		{`{"query": `, 400, "not a JSON object with a query", "BAD_REQUEST"},
		{`[{"query":"{ health { status } }"}]`, 400, "batched operations (a JSON array) are not supported", "BAD_REQUEST"},
		{`{"query":"` + strings.Repeat("x", 2<<20) + `"}`, 413, "larger than the limit", "BAD_REQUEST"},
		{"chunked" + `{"query":"` + strings.Repeat("x", 2<<20) + `"}`, 413, "larger than the limit", "BAD_REQUEST"},
	}
	_, h := newServer(newFake(), Config{})
	for _, tt := range tests {
		body, chunked := strings.CutPrefix(tt.body, "chunked")
		req := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(body))
		if chunked {
			req.ContentLength = -1
		}
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var resp struct {
			Errors []struct {
				Message    string
				Extensions map[string]any
			}
		}
		json.Unmarshal(w.Body.Bytes(), &resp)
		if w.Code != tt.status || len(resp.Errors) != 1 || !strings.Contains(resp.Errors[0].Message, tt.want) ||
			resp.Errors[0].Extensions["code"] != tt.code || strings.Contains(w.Body.String(), "health") || w.Body.Len() > 1000 {
			t.Errorf("%.40s: %d %.300s; want %d %q %s", tt.body, w.Code, w.Body, tt.status, tt.want, tt.code)
		}
	}
}

// TestSocketsForgottenWhenClosed: every way a websocket ends removes it from
// the set that shutdown closes (no leak per connection).
func TestSocketsForgottenWhenClosed(t *testing.T) {
	s, h := newServer(newFake(), Config{InitTimeout: 200 * time.Millisecond})
	srv := httptest.NewServer(h)
	defer srv.Close()
	for i := range 10 {
		for _, proto := range []string{"graphql-transport-ws", "graphql-ws"} {
			ws := wsDial(t, srv.URL, proto, nil)
			ws.read("connection_ack")
			switch i % 3 {
			case 0:
				ws.c.Close(websocket.StatusNormalClosure, "")
			case 1:
				ws.c.CloseNow()
			case 2:
				ws.send(map[string]any{"type": "nonsense"})
				closeCode(t, ws.c)
			}
		}
		c, _, err := websocket.Dial(t.Context(), strings.Replace(srv.URL, "http", "ws", 1)+"/graphql", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
		if err != nil {
			t.Fatal(err)
		}
		closeCode(t, c) // no connection_init: closed by the server
	}
	waitFor(t, func() bool { return s.sockets.len() == 0 })
}
