package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/99designs/gqlgen/client"
	"go.uber.org/goleak"

	"github.com/daca-go/daca/gateway/auth"
	"github.com/daca-go/daca/gateway/live"
	"github.com/daca-go/daca/gateway/wstransport"
	"github.com/daca-go/daca/graph"
	"github.com/daca-go/daca/graph/graphtest"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// The HTTP surface's tests: error presentation, HTTP guards, metrics, the
// pub/sub intake and the websocket protocol, around a resolver over an
// in-memory backend. What the resolvers answer is tested in graph.
// Everything a subscription holds must be gone at the end; the HTTP
// client's idle keep-alive connections are not the server's.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"))
}

// testServer is a Server over f, assembled as the gateway's run does.
type testServer struct {
	*Server
	hub *live.Hub
}

// newServer returns the server and its handler; queue is the feeds' buffer
// per subscriber (0: 64), guard the authentication (nil: none).
func newServer(f *graphtest.Fake, cfg Config, queue int, guard *auth.Guard) (*testServer, http.Handler) {
	if queue == 0 {
		queue = 64
	}
	log := testkit.Quiet()
	hub := live.New(live.Config{Queue: queue, Recent: 100}, DropSlowSubscriber(queue, log), log)
	res := &graph.Resolver{Backend: f, Log: log, Callers: guard,
		Conversations: hub.Conversations, Memories: hub.Memories, Replies: hub.Replies,
		Runs: graph.NewRunWatch(f.ChatRun, 50*time.Millisecond, log), Waker: wstransport.Waker}
	cfg.Guard = guard
	cfg.Live = hub
	s := &testServer{Server: New(cfg, res, log), hub: hub}
	return s, s.Handler()
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitUntil(t, 10*time.Second, what, cond)
}

func errCode(t *testing.T, h http.Handler, query string, opts ...client.Option) (string, map[string]any, string) {
	t.Helper()
	resp, err := client.New(h, client.Path("/graphql")).RawPost(query, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return testkit.FirstError(resp.Errors)
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
			f := graphtest.New()
			f.Err = tt.err
			_, h := newServer(f, Config{}, 0, nil)
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

// TestBearerTokenRefused: an invalid token is refused with 401 before any
// resolver runs.
func TestBearerTokenRefused(t *testing.T) {
	g := &auth.Guard{Mode: "jwt", Verifier: staticVerifier{"tok-ana": {Subject: "ana"}}}
	_, h := newServer(graphtest.New(), Config{}, 0, g)
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

func TestMetrics(t *testing.T) {
	f := graphtest.New()
	_, h := newServer(f, Config{}, 0, nil)
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
	f := graphtest.New()
	_, h := newServer(f, Config{}, 0, nil)
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
		{"GET mutation", "GET", "", "application/json", "", 405, "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := "/graphql"
			switch tt.name {
			case "GET query":
				target += "?query=" + url.QueryEscape("{ health { gateway } }")
			case "GET mutation":
				target += "?query=" + url.QueryEscape(`mutation { sendMessage(input: {userId: "ana", text: "over GET"}) { reply } }`)
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
			if tt.status == http.StatusMethodNotAllowed && (w.Header().Get("Allow") != http.MethodPost || f.LastIn.Text != "") {
				t.Fatalf("Allow: %q, mutation input %+v; want POST, and the mutation not run", w.Header().Get("Allow"), f.LastIn)
			}
		})
	}
}

// BenchmarkMemoryQuery measures the gateway's own cost of a query (HTTP,
// parsing, validation, limits, metrics, resolver) with the backend faked.
func BenchmarkMemoryQuery(b *testing.B) {
	_, h := newServer(graphtest.New(), Config{}, 0, nil)
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
	_, h := newServer(graphtest.New(), Config{}, 0, nil)
	for _, accept := range []string{"", acceptSubscription, acceptDefer, "text/event-stream"} { // every transport a JSON POST may reach
		for _, tt := range tests {
			body, chunked := strings.CutPrefix(tt.body, "chunked")
			req := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(body))
			if chunked {
				req.ContentLength = -1
			}
			req.Header.Set("Content-Type", "application/json")
			if accept != "" {
				req.Header.Set("Accept", accept)
			}
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
				t.Errorf("%.40s (Accept %q): %d %.300s; want %d %q %s", tt.body, accept, w.Code, w.Body, tt.status, tt.want, tt.code)
			}
		}
	}
}

// TestCSRFRule: a POST a browser may send cross-site without a preflight
// (form, multipart or text/plain content) is refused before GraphQL runs,
// unless it carries a header that forces a preflight (Apollo-Require-
// Preflight, X-Apollo-Operation-Name), as Apollo's CSRF prevention does.
func TestCSRFRule(t *testing.T) {
	f := graphtest.New()
	_, h := newServer(f, Config{}, 0, nil)
	mutation := `{"query":"mutation { sendMessage(input: {userId: \"ana\", text: \"csrf\"}) { reply } }"}`
	tests := []struct {
		name, ctype, header string
		refused             bool
	}{
		{"multipart", "multipart/form-data; boundary=x", "", true},
		{"form", "application/x-www-form-urlencoded", "", true},
		{"text/plain", "text/plain;charset=UTF-8", "", true},
		{"multipart with Apollo-Require-Preflight", "multipart/form-data; boundary=x", "Apollo-Require-Preflight", false},
		{"text/plain with X-Apollo-Operation-Name", "text/plain", "X-Apollo-Operation-Name", false},
		{"json needs no header", "application/json", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.LastIn = graph.ChatInput{}
			req := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(mutation))
			req.Header.Set("Content-Type", tt.ctype)
			if tt.header != "" {
				req.Header.Set(tt.header, "true")
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			refused := w.Code == http.StatusBadRequest && strings.Contains(w.Body.String(), "forces a CORS preflight")
			if refused != tt.refused {
				t.Fatalf("%d %s; want refused by the CSRF rule: %v", w.Code, w.Body, tt.refused)
			}
			if tt.refused && f.LastIn.Text != "" {
				t.Fatal("a refused request ran its mutation")
			}
		})
	}
}

// TestComplexityLimit: an operation over GRAPHQL_MAX_COMPLEXITY is refused
// with gqlgen's code; one within it runs. Each is sent three times to one
// server: the complexity of an operation without variables is remembered
// after the first, and must decide the same.
func TestComplexityLimit(t *testing.T) {
	many := func(head, user string, n int) string {
		var b strings.Builder
		b.WriteString(head + "{")
		for i := range n {
			fmt.Fprintf(&b, ` a%d: memory(userId: %s) { name }`, i, user)
		}
		return b.String() + " }"
	}
	tests := []struct {
		name, query, wantCode string
		opts                  []client.Option
	}{
		{"within the limit", many("", `"ana"`, 2), "", nil},
		{"over the limit", many("", `"ana"`, 30), "COMPLEXITY_LIMIT_EXCEEDED", nil},
		{"named, over the limit", many("query Q ", `"ana"`, 30), "COMPLEXITY_LIMIT_EXCEEDED", []client.Option{client.Operation("Q")}},
		{"with variables, within", many("query($u: ID!) ", "$u", 2), "", []client.Option{client.Var("u", "ana")}},
		{"with variables, over", many("query($u: ID!) ", "$u", 30), "COMPLEXITY_LIMIT_EXCEEDED", []client.Option{client.Var("u", "ana")}},
	}
	_, h := newServer(graphtest.New(), Config{MaxComplexity: 20}, 0, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 3 {
				if code, _, msg := errCode(t, h, tt.query, tt.opts...); code != tt.wantCode {
					t.Fatalf("request %d: code %q (%s); want %q", i+1, code, msg, tt.wantCode)
				}
			}
		})
	}
}
