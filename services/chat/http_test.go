package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dapr/durabletask-go/api"
	"github.com/dapr/durabletask-go/api/protos"
	"github.com/dapr/durabletask-go/workflow"
	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/testkit"
	"github.com/daca-go/daca/services/chat/session"
	"github.com/daca-go/daca/services/chat/turn"
)

// fakeWF is the workflow engine: it "runs" a scheduled turn to the outcome
// configured (complete with a reply, fail, or never end).
type fakeWF struct {
	mu         sync.Mutex
	scheduled  map[string]turn.Input
	outcome    string // completed | failed | stuck | terminated
	terminates int
	// fetchFailures fail the first reads of a turn (as Dapr does right
	// after scheduling: "inbox key … missing from state store").
	fetchFailures int
}

// TerminateWorkflow stops a stuck turn.
func (f *fakeWF) TerminateWorkflow(_ context.Context, id string, _ ...workflow.TerminateOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.scheduled[id]; !ok {
		return api.ErrInstanceNotFound
	}
	f.terminates++
	if f.outcome == "stuck" {
		f.outcome = "terminated"
	}
	return nil
}

// RaiseEvent is not used by these tests' turns.
func (f *fakeWF) RaiseEvent(context.Context, string, string, ...workflow.RaiseEventOptions) error {
	return errors.New("no events in this fake")
}

func (f *fakeWF) ScheduleWorkflow(_ context.Context, _ string, opts ...workflow.NewWorkflowOptions) (string, error) {
	req := &protos.CreateInstanceRequest{}
	for _, o := range opts {
		o(req)
	}
	var in turn.Input
	json.Unmarshal([]byte(req.Input.GetValue()), &in)
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.scheduled[req.InstanceId]; ok {
		return "", errors.New("an active workflow with ID already exists")
	}
	f.scheduled[req.InstanceId] = in
	return req.InstanceId, nil
}

func (f *fakeWF) meta(id string) (*workflow.WorkflowMetadata, error) {
	f.mu.Lock()
	in, ok := f.scheduled[id]
	f.mu.Unlock()
	if !ok {
		return nil, api.ErrInstanceNotFound
	}
	inB, _ := json.Marshal(in)
	m := &workflow.WorkflowMetadata{InstanceId: id, Input: wrapperspb.String(string(inB)), LastUpdatedAt: timestamppb.Now()}
	switch f.outcome {
	case "completed":
		out, _ := json.Marshal(turn.Output{UserID: in.UserID, SessionID: in.SessionID, Reply: "re: " + in.Text, Timestamp: time.Unix(0, 0).UTC()})
		m.RuntimeStatus = api.RUNTIME_STATUS_COMPLETED
		m.Output = wrapperspb.String(string(out))
	case "terminated":
		m.RuntimeStatus = api.RUNTIME_STATUS_TERMINATED
	case "pending":
		m.RuntimeStatus = api.RUNTIME_STATUS_PENDING
	case "failed":
		m.RuntimeStatus = api.RUNTIME_STATUS_FAILED
		m.FailureDetails = &protos.TaskFailureDetails{ErrorMessage: "chat turn failed while generating response"}
	default:
		m.RuntimeStatus = api.RUNTIME_STATUS_RUNNING
		m.CustomStatus = wrapperspb.String(contract.StageGenerate)
	}
	return m, nil
}

func (f *fakeWF) FetchWorkflowMetadata(_ context.Context, id string, _ ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error) {
	f.mu.Lock()
	if f.fetchFailures > 0 {
		f.fetchFailures--
		f.mu.Unlock()
		return nil, errors.New("workflow 'x': inbox key 'inbox-000000' declared in metadata (inboxLength=1) but missing from state store")
	}
	f.mu.Unlock()
	return f.meta(id)
}

func (f *fakeWF) WaitForWorkflowCompletion(ctx context.Context, id string, _ ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error) {
	f.mu.Lock()
	stuck := f.outcome == "stuck" || f.outcome == "pending"
	f.mu.Unlock()
	if stuck {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return f.meta(id)
}

type okSidecar struct{}

func (okSidecar) GetMetadata(context.Context) (*dapr.GetMetadataResponse, error) {
	return &dapr.GetMetadataResponse{}, nil
}

// owners is the memory's session owners in memory: "taken" belongs to zed.
type owners struct {
	mu sync.Mutex
	of map[string]string
}

func (o *owners) Claim(_ context.Context, sessionID, userID string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.of == nil {
		o.of = map[string]string{"taken": "zed"}
	}
	if u, ok := o.of[sessionID]; ok && u != userID {
		return apperr.New(apperr.Invalid, "session_id %s belongs to another user", sessionID)
	}
	o.of[sessionID] = userID
	return nil
}

// noApprovals has no requests.
type noApprovals struct{}

func (noApprovals) Get(context.Context, string) (*contract.Approval, error) { return nil, nil }
func (noApprovals) Pending(context.Context, string) ([]contract.Approval, error) {
	return []contract.Approval{}, nil
}
func (noApprovals) Decide(_ context.Context, id string, _ contract.Decision) (contract.Approval, error) {
	return contract.Approval{}, apperr.New(apperr.NotFound, "approval %s not found", id)
}
func (noApprovals) EndTurn(context.Context, string) error { return nil }

// direct starts every turn at once (the session actor's part is tested in
// package session and end to end).
type direct struct{ turns turn.Client }

func (d direct) Accept(ctx context.Context, req session.Accept) (session.Accepted, error) {
	return session.Accepted{Status: contract.RunPending, Running: req.InstanceID}, d.turns.Start(ctx, req.InstanceID, req.Input, req.Fresh)
}
func (direct) Done(context.Context, string, string) error         { return nil }
func (direct) Drop(context.Context, string, string) (bool, error) { return false, nil }

func newTestServer(outcome string, timeout time.Duration) (*srv, *fakeWF) {
	f := &fakeWF{scheduled: map[string]turn.Input{}, outcome: outcome}
	s := newServer(testkit.Quiet(), "", timeout)
	turns := turn.Client{Workflows: f, Log: testkit.Quiet()}
	s.ready(turns, &owners{}, builtinOnly{}, noApprovals{}, direct{turns}, okSidecar{}, "offline")
	return s, f
}

func post(h http.Handler, path, body string, headers ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Set(headers[i], headers[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestChatValidation(t *testing.T) {
	s, _ := newTestServer("completed", time.Second)
	h := s.routes()
	tests := []struct {
		name, body string
		status     int
		detail     string
	}{
		{"empty text", `{"user_id":"u","text":""}`, 400, "Message text cannot be empty"},
		{"blank text", `{"user_id":"u","text":" \n"}`, 400, "Message text cannot be empty"},
		{"too long", `{"user_id":"u","text":"` + strings.Repeat("x", 16<<10+1) + `"}`, 413, "longer than"},
		{"bad user", `{"user_id":"a||b","text":"x"}`, 400, "user_id must match"},
		{"bad session", `{"user_id":"u","text":"x","metadata":{"session_id":"a b"}}`, 400, "session_id must match"},
		{"too many tags", `{"user_id":"u","text":"x","tags":[` + strings.Repeat(`"t",`, 32) + `"t"]}`, 400, "at most 32 tags"},
		{"malformed", `{"user_id":`, 400, "malformed JSON"},
		{"empty body", ``, 400, "request body is empty"},
		{"another user's session", `{"user_id":"u","text":"x","metadata":{"session_id":"taken"}}`, 400, "session_id taken belongs to another user"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := post(h, "/chat", tt.body)
			if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.detail) {
				t.Fatalf("%d %s; want %d %q", w.Code, w.Body, tt.status, tt.detail)
			}
		})
	}
}

// TestNoTurnOnAnotherUsersSession: the turn is refused before any workflow
// starts.
func TestNoTurnOnAnotherUsersSession(t *testing.T) {
	s, f := newTestServer("completed", time.Second)
	for _, path := range []string{"/chat", "/chat/async"} {
		w := post(s.routes(), path, `{"user_id":"u","text":"x","metadata":{"session_id":"taken"}}`, "Idempotency-Key", "k-"+path)
		if w.Code != http.StatusBadRequest || len(f.scheduled) != 0 {
			t.Fatalf("%s: %d %s, %d workflows scheduled; want 400 and none", path, w.Code, w.Body, len(f.scheduled))
		}
	}
}

func TestChatOutcomes(t *testing.T) {
	tests := []struct {
		outcome string
		status  int
		want    string
	}{
		{"completed", 200, `"reply":"re: hello"`},
		{"failed", 503, "chat turn failed while generating response"},
		{"stuck", 504, "still running"},
	}
	for _, tt := range tests {
		t.Run(tt.outcome, func(t *testing.T) {
			s, f := newTestServer(tt.outcome, 50*time.Millisecond)
			w := post(s.routes(), "/chat/", `{"user_id":"u","text":"hello","metadata":{"session_id":"s1"}}`)
			if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.want) {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			var body map[string]any
			json.Unmarshal(w.Body.Bytes(), &body)
			if id, _ := body["instance_id"].(string); !strings.HasPrefix(id, "chat-") || f.scheduled[id].SessionID != "s1" {
				t.Fatalf("instance %v not scheduled with the session", body["instance_id"])
			}
		})
	}
}

func TestIdempotencyKeyReusesTheTurn(t *testing.T) {
	s, f := newTestServer("completed", time.Second)
	h := s.routes()
	body := `{"user_id":"u","text":"hello"}`
	a := post(h, "/chat", body, "Idempotency-Key", "k1")
	b := post(h, "/chat", body, "Idempotency-Key", "k1")
	c := post(h, "/chat", body, "Idempotency-Key", "k2")
	d := post(h, "/chat", `{"user_id":"v","text":"hello"}`, "Idempotency-Key", "k1")
	id := func(w *httptest.ResponseRecorder) string {
		var m map[string]any
		json.Unmarshal(w.Body.Bytes(), &m)
		return m["instance_id"].(string)
	}
	if id(a) != id(b) || id(a) == id(c) || id(a) == id(d) || len(f.scheduled) != 3 {
		t.Fatalf("ids %s %s %s %s, %d scheduled", id(a), id(b), id(c), id(d), len(f.scheduled))
	}
	if w := post(h, "/chat", body, "Idempotency-Key", "bad\x01key"); w.Code != 400 {
		t.Fatalf("unprintable key: %d", w.Code)
	}
}

// counting is a session that counts the accepts it gets.
type counting struct {
	direct
	mu      sync.Mutex
	accepts map[string]int
	busy    string // the session's running turn: an accept again (not fresh) is refused
}

func (c *counting) Accept(ctx context.Context, req session.Accept) (session.Accepted, error) {
	c.mu.Lock()
	c.accepts[req.InstanceID]++
	c.mu.Unlock()
	if c.busy != "" && !req.Fresh {
		return session.Accepted{Running: c.busy, Refused: true}, nil
	}
	return c.direct.Accept(ctx, req)
}

// TestRetryOfAnUnstartedTurnHandsItToItsSession: a retry (same key) of a
// turn whose workflow was created but has not started hands it to its
// session again (its first accept may have failed after the workflow was
// scheduled); the retry of a turn that runs does not.
func TestRetryOfAnUnstartedTurnHandsItToItsSession(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, outcome, busy string
		want                int // accepts
		retry, terminates   int // the retry's status, the turn's terminates
	}{
		{name: "pending", outcome: "pending", want: 2, retry: http.StatusAccepted},
		{name: "stuck", outcome: "stuck", want: 1, retry: http.StatusAccepted},
		// Its session runs another turn now and rejects a second: the
		// retry is refused and the turn stopped before it runs.
		{name: "pending, its session busy (REJECT)", outcome: "pending", busy: "chat-other", want: 2, retry: http.StatusConflict, terminates: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeWF{scheduled: map[string]turn.Input{}, outcome: tc.outcome}
			s := newServer(testkit.Quiet(), "", 50*time.Millisecond)
			turns := turn.Client{Workflows: f, Log: testkit.Quiet()}
			sessions := &counting{direct: direct{turns}, accepts: map[string]int{}, busy: tc.busy}
			s.ready(turns, &owners{}, builtinOnly{}, noApprovals{}, sessions, okSidecar{}, "offline")
			h := s.routes()
			post(h, "/chat/async", `{"user_id":"u","text":"hello","on_busy":"REJECT"}`, "Idempotency-Key", "k1")
			if w := post(h, "/chat/async", `{"user_id":"u","text":"hello","on_busy":"REJECT"}`, "Idempotency-Key", "k1"); w.Code != tc.retry {
				t.Fatalf("retry answered %d %s; want %d", w.Code, w.Body, tc.retry)
			}
			f.mu.Lock()
			terminates := f.terminates
			f.mu.Unlock()
			if terminates != tc.terminates {
				t.Fatalf("%d terminates; want %d", terminates, tc.terminates)
			}
			if len(sessions.accepts) != 1 {
				t.Fatalf("accepts %v; want one turn", sessions.accepts)
			}
			for id, n := range sessions.accepts {
				if n != tc.want {
					t.Fatalf("turn %s accepted %d times; want %d", id, n, tc.want)
				}
			}
		})
	}
}

func TestStatusOfATurn(t *testing.T) {
	s, f := newTestServer("stuck", time.Second)
	h := s.routes()
	w := post(h, "/chat/async", `{"user_id":"u","text":"hello"}`)
	if w.Code != http.StatusAccepted {
		t.Fatalf("async: %d %s", w.Code, w.Body)
	}
	var acc map[string]string
	json.Unmarshal(w.Body.Bytes(), &acc)
	r := httptest.NewRecorder()
	h.ServeHTTP(r, httptest.NewRequest(http.MethodGet, "/chat/"+acc["instance_id"], nil))
	if r.Code != 200 || !strings.Contains(r.Body.String(), `"status":"RUNNING"`) || !strings.Contains(r.Body.String(), `"stage":"generating_response"`) {
		t.Fatalf("status: %d %s", r.Code, r.Body)
	}
	r = httptest.NewRecorder()
	h.ServeHTTP(r, httptest.NewRequest(http.MethodGet, "/chat/chat-unknown", nil))
	if r.Code != 404 {
		t.Fatalf("unknown: %d", r.Code)
	}
	_ = f
}

// TestCancel: a running turn is stopped and answered TERMINATED; a repeat,
// or a turn that ended already, answers its end without stopping anything;
// an unknown turn is 404.
func TestCancel(t *testing.T) {
	tests := []struct {
		name, outcome, want string
		terminates          int
	}{
		{"running", "stuck", `"status":"TERMINATED"`, 1},
		{"completed already", "completed", `"status":"COMPLETED"`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, f := newTestServer(tt.outcome, 50*time.Millisecond)
			h := s.routes()
			w := post(h, "/chat/async", `{"user_id":"u","text":"hello"}`)
			var started contract.ChatStarted
			json.Unmarshal(w.Body.Bytes(), &started)
			for range 2 {
				w = post(h, "/chat/"+started.InstanceID+"/cancel", "")
				if w.Code != 200 || !strings.Contains(w.Body.String(), tt.want) || !strings.Contains(w.Body.String(), started.InstanceID) {
					t.Fatalf("cancel: %d %s; want 200 with %s", w.Code, w.Body, tt.want)
				}
			}
			if f.terminates != tt.terminates {
				t.Fatalf("%d terminates; want %d", f.terminates, tt.terminates)
			}
		})
	}
	s, _ := newTestServer("stuck", time.Second)
	if w := post(s.routes(), "/chat/chat-unknown/cancel", ""); w.Code != 404 {
		t.Fatalf("unknown turn: %d %s", w.Code, w.Body)
	}
}

// TestStatusReadRetried: a read of a turn that fails right after it was
// scheduled (Dapr's transient "missing from state store") is tried again;
// one that keeps failing is 503.
func TestStatusReadRetried(t *testing.T) {
	for _, tt := range []struct {
		failures, want int
	}{{2, 200}, {50, 503}} {
		s, f := newTestServer("stuck", time.Second)
		h := s.routes()
		w := post(h, "/chat/async", `{"user_id":"u","text":"hello"}`)
		var started contract.ChatStarted
		json.Unmarshal(w.Body.Bytes(), &started)
		f.mu.Lock()
		f.fetchFailures = tt.failures
		f.mu.Unlock()
		r := httptest.NewRecorder()
		h.ServeHTTP(r, httptest.NewRequest(http.MethodGet, "/chat/"+started.InstanceID, nil))
		if r.Code != tt.want {
			t.Fatalf("%d failing reads: %d %s; want %d", tt.failures, r.Code, r.Body, tt.want)
		}
	}
}

type builtinOnly struct{}

func (builtinOnly) Tools(context.Context) []turn.Tool { return []turn.Tool{turn.Builtin} }
