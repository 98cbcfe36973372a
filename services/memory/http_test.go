package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/dev/statetest"
	"github.com/daca-go/daca/internal/dev/testkit"
	"github.com/daca-go/daca/internal/llm"
	"github.com/daca-go/daca/services/memory/store"
)

type sidecar struct {
	mu        sync.Mutex
	published []any
}

func (p *sidecar) PublishEvent(_ context.Context, _, topic string, data interface{}, _ ...dapr.PublishEventOption) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.published = append(p.published, data)
	return nil
}

func (p *sidecar) GetMetadata(context.Context) (*dapr.GetMetadataResponse, error) {
	return &dapr.GetMetadataResponse{}, nil
}

type model struct{ err error }

func (m model) Complete(context.Context, string, []llm.Message, string) (string, llm.Usage, error) {
	return "a summary", llm.Usage{PromptTokens: 7, CompletionTokens: 3}, m.err
}
func (m model) Mode() string { return "offline" }

func setup(llmErr error) (http.Handler, *statetest.State, *sidecar) {
	st := statetest.New()
	pub := &sidecar{}
	log := testkit.Quiet()
	s := newServer(log, "")
	s.ready(store.New(st, store.Config{}, log), pub, model{err: llmErr}, &jobs{})
	return s.routes(), st, pub
}

// jobs records the jobs scheduled.
type jobs struct {
	mu       sync.Mutex
	names    []string
	dues     []string
	policies []dapr.FailurePolicy
}

func (j *jobs) ScheduleJob(_ context.Context, job *dapr.Job) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.names = append(j.names, job.Name)
	j.policies = append(j.policies, job.FailurePolicy)
	if job.DueTime != nil {
		j.dues = append(j.dues, *job.DueTime)
	}
	return nil
}

// TestSummaryDebounce: with SUMMARY_DEBOUNCE, the first turn that waits
// for a summary schedules the user's job and the next ones do not; the
// SUMMARY_EVERY-th turn makes the summary at once; a job that fires before
// the user's turns have paused moves itself to the pause's end; after the
// pause it makes the summary the turns wait for.
func TestSummaryDebounce(t *testing.T) {
	t.Parallel()
	st := statetest.New()
	pub := &sidecar{}
	log := testkit.Quiet()
	s := newServer(log, "")
	s.debounce = time.Second
	js := &jobs{}
	var mu sync.Mutex
	now := time.Date(2026, 12, 6, 1, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	wait := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	s.ready(store.New(st, store.Config{SummaryEvery: 3, SummaryDebounce: s.debounce, Now: clock}, log), pub, model{}, js)
	h := s.routes()
	turn := func(i int) {
		t.Helper()
		ev := ceJSON(fmt.Sprintf("ev-%d", i), map[string]string{"user_id": "u1", "session_id": "s1", "event_type": "ConversationUpdated", "user_message": "hi", "assistant_reply": "hello"})
		if got := deliver(h, ev); got != "SUCCESS" {
			t.Fatalf("event %d: %s", i, got)
		}
	}
	job := func() string {
		t.Helper()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/job/"+summaryJob("u1"), nil))
		if w.Code != http.StatusOK {
			t.Fatalf("job: %d %s", w.Code, w.Body)
		}
		return strings.TrimSpace(w.Body.String())
	}
	published := func() int { pub.mu.Lock(); defer pub.mu.Unlock(); return len(pub.published) }
	scheduled := func() []string { js.mu.Lock(); defer js.mu.Unlock(); return slices.Clone(js.dues) }
	turn(1)
	turn(2)
	if n, d := published(), scheduled(); n != 0 || !slices.Equal(d, []string{"1s"}) {
		t.Fatalf("after two turns: %d MemoryUpdated, jobs due %v; want none, one job due in 1s", n, d)
	}
	turn(3) // the third since the last summary: made now
	if n := published(); n != 1 {
		t.Fatalf("%d MemoryUpdated after the third turn; want 1", n)
	}
	if got := job(); got != `{"summarized":false}` {
		t.Fatalf("the job after the summary: %s", got)
	}
	turn(4) // the job is still set to fire: no new one
	wait(400 * time.Millisecond)
	if got, d := job(), scheduled(); got != `{"summarized":false}` || !slices.Equal(d, []string{"1s", "600ms"}) {
		t.Fatalf("the job before the pause: %s, jobs due %v; want it moved to the pause's end (600ms)", got, d)
	}
	wait(600 * time.Millisecond)
	if got := job(); got != `{"summarized":true}` || published() != 2 {
		t.Fatalf("the job after the pause: %s, %d published", got, published())
	}
	turn(5) // the job fired: the next turn that waits schedules it again
	js.mu.Lock()
	defer js.mu.Unlock()
	if len(js.names) != 3 || js.names[0] != summaryJob("u1") || js.names[2] != summaryJob("u1") {
		t.Fatalf("jobs %v; want the user's, three times", js.names)
	}
	if u, ok := userOfJob(js.names[0]); !ok || u != "u1" {
		t.Fatalf("job name %s: user %q", js.names[0], u)
	}
	// Delivered again while the memory fails it, for longer than Dapr's
	// default (three tries a second apart).
	c := js.policies[0].GetPBFailurePolicy().GetConstant()
	if c == nil || c.GetInterval().AsDuration() != 5*time.Second || c.GetMaxRetries() != 720 {
		t.Fatalf("failure policy %v; want every 5 s, 720 times", js.policies[0])
	}
}

func deliver(h http.Handler, body string) string {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/conversations", strings.NewReader(body)))
	var out map[string]string
	json.Unmarshal(w.Body.Bytes(), &out)
	return out["status"]
}

func ceJSON(id string, data any) string {
	b, _ := json.Marshal(map[string]any{"id": id, "specversion": "1.0", "type": "com.dapr.event.sent", "data": data})
	return string(b)
}

func TestSubscriptionStatuses(t *testing.T) {
	good := map[string]string{"user_id": "u", "session_id": "s", "event_type": "ConversationUpdated", "user_message": "hi", "assistant_reply": "hello"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range good {
			m[a] = b
		}
		m[k] = v
		return m
	}
	tests := []struct {
		name, body string
		llmErr     error
		down       bool
		want       string
	}{
		{"applied", ceJSON("e1", good), nil, false, "SUCCESS"},
		{"malformed JSON", `{"id":`, nil, false, "DROP"},
		{"no CloudEvent envelope (tutorial's raw event)", `{"user_id":"u","session_id":"s","event_type":"ConversationUpdated"}`, nil, false, "DROP"},
		{"foreign event type", ceJSON("e2", with("event_type", "Other")), nil, false, "DROP"},
		{"key injection", ceJSON("e3", with("user_id", "a||b")), nil, false, "DROP"},
		{"empty reply", ceJSON("e4", with("assistant_reply", " ")), nil, false, "DROP"},
		{"LLM unavailable", ceJSON("e5", good), apperr.New(apperr.Unavailable, "down"), false, "RETRY"},
		{"LLM rate limited", ceJSON("e6", good), apperr.New(apperr.RateLimited, "slow"), false, "RETRY"},
		{"state store down", ceJSON("e7", good), nil, true, "RETRY"},
		{"data as a JSON string", ceJSON("e8", func() string { b, _ := json.Marshal(good); return string(b) }()), nil, false, "SUCCESS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, st, pub := setup(tt.llmErr)
			if tt.down {
				st.FailReads(errors.New("connection refused"))
			}
			if got := deliver(h, tt.body); got != tt.want {
				t.Fatalf("status %s; want %s", got, tt.want)
			}
			if tt.want == "SUCCESS" && len(pub.published) != 1 {
				t.Fatalf("MemoryUpdated published %d times", len(pub.published))
			}
			if tt.want != "SUCCESS" && st.Writes() != 0 {
				t.Fatalf("state written for a %s event", tt.want)
			}
		})
	}
}

// TestForeignSessionEventDropped: the memory's own lock — an event whose
// user does not own the session is dropped (never retried) and changes
// nothing.
func TestForeignSessionEventDropped(t *testing.T) {
	h, st, pub := setup(nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPut, "/owners/s", strings.NewReader(`{"user_id":"ana"}`)))
	if w.Code != http.StatusOK {
		t.Fatalf("claim: %d %s", w.Code, w.Body)
	}
	writes := st.Writes()
	ev := ceJSON("e-bob", map[string]string{"user_id": "bob", "session_id": "s", "event_type": "ConversationUpdated", "user_message": "hi", "assistant_reply": "hello"})
	if got := deliver(h, ev); got != "DROP" {
		t.Fatalf("bob's event on ana's session: %s; want DROP", got)
	}
	if st.Writes() != writes || len(pub.published) != 0 {
		t.Fatalf("%d writes, %d MemoryUpdated after a refused event; want none", st.Writes()-writes, len(pub.published))
	}
}

func TestRedeliveryAppliedOnce(t *testing.T) {
	h, _, pub := setup(nil)
	ev := ceJSON("same", map[string]string{"user_id": "u", "session_id": "s", "event_type": "ConversationUpdated", "user_message": "hi", "assistant_reply": "hello"})
	for range 3 {
		if got := deliver(h, ev); got != "SUCCESS" {
			t.Fatal(got)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/conversations/s", nil))
	var out struct{ History []any }
	json.Unmarshal(w.Body.Bytes(), &out)
	if len(out.History) != 2 || len(pub.published) != 1 {
		t.Fatalf("history %d entries, %d MemoryUpdated; want 2 and 1", len(out.History), len(pub.published))
	}
}

func TestRoutes(t *testing.T) {
	h, _, _ := setup(nil)
	tests := []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"GET", "/", "", 200, "Welcome to the DACA Agent Memory Service"},
		{"GET", "/health", "", 200, `"llm":"offline"`},
		{"GET", "/healthz", "", 200, `"status":"ok"`},
		{"GET", "/memories/ana", "", 200, `"user_summary":"ana is a new user."`},
		{"POST", "/memories/ana/initialize", `{"name":"Ana","preferred_style":"formal"}`, 200, `"status":"success"`},
		{"GET", "/memories/ana", "", 200, `"preferred_style":"formal"`},
		{"POST", "/memories/ana/initialize", `{"name":"` + strings.Repeat("x", 201) + `"}`, 400, "name is longer than"},
		{"GET", "/memories/a%7C%7Cb", "", 400, "user_id must match"},
		{"GET", "/conversations/none", "", 200, `"history":[]`},
		{"DELETE", "/conversations/none", "", 404, "not found"},
		{"POST", "/conversations/batch", `{"session_ids":["none","other"],"last":2}`, 200, `{"conversations":[{"session_id":"none","history":[]},{"session_id":"other","history":[]}]}`},
		{"POST", "/conversations/batch", `{"session_ids":[]}`, 400, "session_ids must hold 1 to 100 ids"},
		{"POST", "/conversations/batch", `{"session_ids":["a||b"]}`, 400, "session_ids must match"},
		{"POST", "/conversations/batch", `{"session_ids":["a"],"last":-1}`, 400, "last must be a non-negative integer"},
		{"POST", "/conversations/batch", `{"session_ids":"a"}`, 400, ""},
		{"GET", "/users/ana/sessions", "", 200, `"sessions":[]`},
		{"DELETE", "/memories/ana", "", 200, `"sessions_deleted":0`},
		{"GET", "/owners/s-own", "", 404, "session s-own not found"},
		{"PUT", "/owners/s-own", `{"user_id":"ana"}`, 200, `{"session_id":"s-own","user_id":"ana"}`},
		{"PUT", "/owners/s-own", `{"user_id":"ana"}`, 200, `"user_id":"ana"`},
		{"PUT", "/owners/s-own", `{"user_id":"bob"}`, 403, "session s-own belongs to another user"},
		{"GET", "/owners/s-own", "", 200, `{"session_id":"s-own","user_id":"ana"}`},
		{"PUT", "/owners/s-own", `{"user_id":"a||b"}`, 400, "user_id must match"},
		{"GET", "/conversations/s-own", "", 200, `"history":[]`},
		{"GET", "/conversations/s-own?user_id=ana&last=10", "", 200, `"history":[]`},
		{"GET", "/conversations/s-own?user_id=a%7C%7Cb", "", 400, "user_id must match"},
		{"GET", "/usage/ana", "", 200, `"tokens_in":0,"tokens_out":0,"llm_calls":0,"turns":0,"tool_calls":0`},
		{"GET", "/usage/ana?since=2026-12-01T10:00:00Z", "", 200, `"since":"2026-12-01T00:00:00Z"`},
		{"GET", "/usage/ana?since=yesterday", "", 400, "since must be an RFC 3339 time"},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))
		if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.want) {
			t.Fatalf("%s %s: %d %s; want %d %q", tt.method, tt.path, w.Code, w.Body, tt.status, tt.want)
		}
	}
}

// TestContext: GET /context/{user_id} answers the user's profile and the
// last entries of a session the user owns, and another user's session as
// an empty one.
func TestContext(t *testing.T) {
	t.Parallel()
	h, _, _ := setup(nil)
	if got := deliver(h, ceJSON("e1", map[string]string{"user_id": "ana", "session_id": "s1", "event_type": "ConversationUpdated", "user_message": "hi", "assistant_reply": "hello"})); got != "SUCCESS" {
		t.Fatal(got)
	}
	tests := []struct {
		path   string
		status int
		want   string
	}{
		{"/context/ana?session_id=s1&last=1", 200, `"history":[{"role":"assistant","content":"hello"`},
		{"/context/ana?session_id=s1", 200, `"user_summary":"a summary"`},
		{"/context/bob?session_id=s1", 200, `{"profile":{"name":"bob","preferred_style":"casual","user_summary":"bob is a new user."},"history":[]}`},
		{"/context/ana?session_id=none", 200, `"history":[]`},
		{"/context/ana", 400, "session_id must match"},
		{"/context/ana?session_id=a%7C%7Cb", 400, "session_id must match"},
		{"/context/ana?session_id=s1&last=-1", 400, "last must be a non-negative integer"},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, tt.path, nil))
		if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.want) {
			t.Errorf("GET %s: %d %s; want %d %q", tt.path, w.Code, w.Body, tt.status, tt.want)
		}
	}
}
