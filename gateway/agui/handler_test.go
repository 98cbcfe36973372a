package agui

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/apperr"
)

// fakeTurns answers as the resolvers would, and records the calls.
type fakeTurns struct {
	mu       sync.Mutex
	started  []model.SendMessageInput
	decided  []string
	streamed []string
	startErr error
	chunks   []*model.ChatChunk
	failure  string
}

func (f *fakeTurns) StartChat(_ context.Context, in model.SendMessageInput) (*model.ChatRun, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.startErr != nil {
		return nil, f.startErr
	}
	f.started = append(f.started, in)
	s := "s-new"
	if in.SessionID != nil {
		s = *in.SessionID
	}
	return &model.ChatRun{InstanceID: "chat-1", SessionID: &s, Status: model.ChatStatusPending}, nil
}

func (f *fakeTurns) DecideToolCall(_ context.Context, id string, approve bool, reason *string) (*model.Approval, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id != "a1" {
		return nil, apperr.New(apperr.NotFound, "approval %s not found", id)
	}
	f.decided = append(f.decided, id+"="+map[bool]string{true: "approve", false: "deny:" + *reason}[approve])
	return &model.Approval{ID: id, InstanceID: "chat-1", SessionID: "t1", Status: model.ApprovalStatusApproved}, nil
}

func (f *fakeTurns) ChatStream(_ context.Context, id string, _ *int) (<-chan *model.ChatChunk, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id != "chat-1" {
		return nil, apperr.New(apperr.NotFound, "chat turn %s not found", id)
	}
	f.streamed = append(f.streamed, id)
	ch := make(chan *model.ChatChunk, len(f.chunks))
	for _, c := range f.chunks {
		ch <- c
	}
	close(ch)
	return ch, nil
}

func (f *fakeTurns) ChatRun(context.Context, string) (*model.ChatRun, error) {
	return &model.ChatRun{InstanceID: "chat-1", Status: model.ChatStatusFailed, Error: &f.failure}, nil
}

// post sends body to a handler over f; it returns the status, the
// response's JSON body (an error) or its events.
func post(t *testing.T, f *fakeTurns, contentType, body string) (int, string, []Event) {
	t.Helper()
	srv := httptest.NewServer(&Handler{Turns: f, Log: slog.New(slog.DiscardHandler), KeepAlive: time.Hour})
	defer srv.Close()
	resp, err := http.Post(srv.URL, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	var evs []Event
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var ev Event
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
			evs = append(evs, ev)
		}
	}
	return resp.StatusCode, "", evs
}

func TestHandler(t *testing.T) {
	t.Parallel()
	reply := []*model.ChatChunk{text(1, "Hi"), done(2, "Hi there", model.ChatStatusCompleted)}
	for _, tc := range []struct {
		name        string
		contentType string
		body        string
		f           *fakeTurns
		status      int
		errWant     string   // in the error body
		events      []string // TYPE:detail (show), RUN_STARTED with its thread
		check       func(t *testing.T, f *fakeTurns)
	}{
		{name: "a new turn on a thread", body: `{"threadId":"t1","runId":"r1","messages":[{"id":"u1","role":"user","content":"hi"}],"forwardedProps":{"userId":"ann"}}`,
			f: &fakeTurns{chunks: reply}, status: 200,
			events: []string{"RUN_STARTED:t1", "TEXT_MESSAGE_START:chat-1", "TEXT_MESSAGE_CONTENT:Hi", "TEXT_MESSAGE_CONTENT: there", "TEXT_MESSAGE_END:", "RUN_FINISHED:success"},
			check: func(t *testing.T, f *fakeTurns) {
				in := f.started[0]
				if in.UserID != "ann" || in.Text != "hi" || *in.SessionID != "t1" || *in.IdempotencyKey != "agui:t1:u1" {
					t.Fatalf("started %+v", in)
				}
			}},
		{name: "no thread: a new session, named in RUN_STARTED", body: `{"threadId":"","runId":"r1","messages":[{"id":"u1","role":"user","content":[{"type":"text","text":"hi"}]}],"forwardedProps":{"userId":"ann"}}`,
			f: &fakeTurns{chunks: reply}, status: 200,
			events: []string{"RUN_STARTED:s-new", "TEXT_MESSAGE_START:chat-1", "TEXT_MESSAGE_CONTENT:Hi", "TEXT_MESSAGE_CONTENT: there", "TEXT_MESSAGE_END:", "RUN_FINISHED:success"},
			check: func(t *testing.T, f *fakeTurns) {
				if in := f.started[0]; in.SessionID != nil || in.Text != "hi" {
					t.Fatalf("started %+v", in)
				}
			}},
		{name: "resume approves, then follows the turn", body: `{"threadId":"t1","runId":"r2","messages":[],"resume":[{"interruptId":"a1","status":"resolved","payload":{"approved":true}}],"forwardedProps":{"userId":"ann"}}`,
			f: &fakeTurns{chunks: reply}, status: 200,
			events: []string{"RUN_STARTED:t1", "TEXT_MESSAGE_START:chat-1", "TEXT_MESSAGE_CONTENT:Hi", "TEXT_MESSAGE_CONTENT: there", "TEXT_MESSAGE_END:", "RUN_FINISHED:success"},
			check: func(t *testing.T, f *fakeTurns) {
				if len(f.decided) != 1 || f.decided[0] != "a1=approve" || len(f.started) != 0 {
					t.Fatalf("decided %v started %v", f.decided, f.started)
				}
			}},
		{name: "cancelled denies", body: `{"threadId":"t1","runId":"r2","messages":[],"resume":[{"interruptId":"a1","status":"cancelled"}],"forwardedProps":{"userId":"ann"}}`,
			f: &fakeTurns{chunks: reply}, status: 200,
			events: []string{"RUN_STARTED:t1", "TEXT_MESSAGE_START:chat-1", "TEXT_MESSAGE_CONTENT:Hi", "TEXT_MESSAGE_CONTENT: there", "TEXT_MESSAGE_END:", "RUN_FINISHED:success"},
			check: func(t *testing.T, f *fakeTurns) {
				if len(f.decided) != 1 || f.decided[0] != "a1=deny:cancelled by the user" {
					t.Fatalf("decided %v", f.decided)
				}
			}},
		{name: "an unknown interrupt: as GraphQL answers it", body: `{"threadId":"t1","runId":"r2","messages":[],"resume":[{"interruptId":"a9","status":"resolved"}],"forwardedProps":{"userId":"ann"}}`,
			f: &fakeTurns{}, status: 404, errWant: "approval a9 not found"},
		{name: "a reconnect to a turn by its reply", body: `{"threadId":"t1","runId":"r3","messages":[{"id":"u1","role":"user","content":"hi"},{"id":"chat-1","role":"assistant","content":"Hi"}],"forwardedProps":{"userId":"ann"}}`,
			f: &fakeTurns{chunks: reply}, status: 200,
			events: []string{"RUN_STARTED:t1", "TEXT_MESSAGE_START:chat-1", "TEXT_MESSAGE_CONTENT: there", "TEXT_MESSAGE_END:", "RUN_FINISHED:success"},
			check: func(t *testing.T, f *fakeTurns) {
				if len(f.started) != 0 || len(f.streamed) != 1 {
					t.Fatalf("started %v streamed %v", f.started, f.streamed)
				}
			}},
		{name: "a request for a decision ends the run with an interrupt", body: `{"threadId":"t1","runId":"r1","messages":[{"id":"u1","role":"user","content":"note"}],"forwardedProps":{"userId":"ann"}}`,
			f: &fakeTurns{chunks: []*model.ChatChunk{call(1, "", model.ToolCallStatusRunning, "", ""), call(2, "", model.ToolCallStatusRunning, "", model.ApprovalStatusPending)}}, status: 200,
			events: []string{"RUN_STARTED:t1", "TOOL_CALL_START:tools_create_note/chat-1", `TOOL_CALL_ARGS:{"text":"water"}`, "TOOL_CALL_END:", "RUN_FINISHED:interrupt/a1/chat-1-c1"}},
		{name: "a replayed request decided since does not interrupt", body: `{"threadId":"t1","runId":"r1","messages":[{"id":"u1","role":"user","content":"note"}],"forwardedProps":{"userId":"ann"}}`,
			f: &fakeTurns{chunks: []*model.ChatChunk{call(1, "", model.ToolCallStatusRunning, "", model.ApprovalStatusPending),
				call(2, "", model.ToolCallStatusRunning, "", model.ApprovalStatusApproved), call(3, "", model.ToolCallStatusCompleted, "noted", ""), done(4, "ok", model.ChatStatusCompleted)}}, status: 200,
			events: []string{"RUN_STARTED:t1", "TOOL_CALL_START:tools_create_note/chat-1", `TOOL_CALL_ARGS:{"text":"water"}`, "TOOL_CALL_END:", "TOOL_CALL_RESULT:noted",
				"TEXT_MESSAGE_START:chat-1-1", "TEXT_MESSAGE_CONTENT:ok", "TEXT_MESSAGE_END:", "RUN_FINISHED:success"}},
		{name: "a failed turn: RUN_ERROR with its error", body: `{"threadId":"t1","runId":"r1","messages":[{"id":"u1","role":"user","content":"hi"}],"forwardedProps":{"userId":"ann"}}`,
			f: &fakeTurns{chunks: []*model.ChatChunk{done(1, "", model.ChatStatusFailed)}, failure: "the model is unavailable"}, status: 200,
			events: []string{"RUN_STARTED:t1", "RUN_ERROR:TURN_FAILED the model is unavailable"}},
		{name: "a stream cut off: RUN_ERROR saying how to go on", body: `{"threadId":"t1","runId":"r1","messages":[{"id":"u1","role":"user","content":"hi"}],"forwardedProps":{"userId":"ann"}}`,
			f: &fakeTurns{chunks: []*model.ChatChunk{text(1, "Hi")}}, status: 200,
			events: []string{"RUN_STARTED:t1", "TEXT_MESSAGE_START:chat-1", "TEXT_MESSAGE_CONTENT:Hi", "RUN_ERROR:UNAVAILABLE the stream was cut off (too slow a reader, or the gateway is stopping): send the same input again to go on"}},
		{name: "the turn limit: 429 before the stream", body: `{"threadId":"t1","runId":"r1","messages":[{"id":"u1","role":"user","content":"hi"}],"forwardedProps":{"userId":"ann"}}`,
			f: &fakeTurns{startErr: &apperr.Error{Code: apperr.RateLimited, Message: "too many messages; slow down", RetryAfter: 3 * time.Second}}, status: 429, errWant: `"retry_after":3`},
		{name: "no user with AUTH_MODE=none", body: `{"threadId":"t1","runId":"r1","messages":[{"id":"u1","role":"user","content":"hi"}]}`,
			f: &fakeTurns{}, status: 400, errWant: "forwardedProps.userId is required"},
		{name: "nothing to run", body: `{"threadId":"t1","runId":"r1","messages":[{"id":"x","role":"tool","toolCallId":"c1","content":"ok"}],"forwardedProps":{"userId":"ann"}}`,
			f: &fakeTurns{}, status: 400, errWant: "nothing to run"},
		{name: "no runId", body: `{"threadId":"t1","messages":[{"id":"u1","role":"user","content":"hi"}],"forwardedProps":{"userId":"ann"}}`,
			f: &fakeTurns{}, status: 400, errWant: "runId must be"},
		{name: "a bad thread id", body: `{"threadId":"a b","runId":"r1","messages":[],"forwardedProps":{"userId":"ann"}}`,
			f: &fakeTurns{}, status: 400, errWant: "threadId"},
		{name: "not JSON", contentType: "text/plain", body: `{}`, f: &fakeTurns{}, status: 400, errWant: "application/json"},
		{name: "malformed JSON", body: `{"threadId":`, f: &fakeTurns{}, status: 400, errWant: "malformed JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ct := tc.contentType
			if ct == "" {
				ct = "application/json"
			}
			status, body, evs := post(t, tc.f, ct, tc.body)
			if status != tc.status || !strings.Contains(body, tc.errWant) {
				t.Fatalf("status %d body %s; want %d with %q", status, body, tc.status, tc.errWant)
			}
			if tc.events != nil {
				got := show(evs)
				for i, e := range evs {
					switch e.Type {
					case RunStarted:
						got[i] += e.ThreadID
						if e.RunID == "" {
							t.Fatalf("RUN_STARTED without its runId: %+v", e)
						}
					case RunError:
						got[i] += " " + e.Message
					case RunFinished:
						if e.ThreadID == "" || e.RunID == "" {
							t.Fatalf("RUN_FINISHED without its thread and run: %+v", e)
						}
					}
				}
				if g, w := strings.Join(got, "\n"), strings.Join(tc.events, "\n"); g != w {
					t.Fatalf("events:\n%s\nwant:\n%s", g, w)
				}
			}
			if tc.check != nil {
				tc.check(t, tc.f)
			}
		})
	}
}
