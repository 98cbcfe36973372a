// Package agui serves AG-UI (the Agent-User Interaction protocol of
// CopilotKit and other agent front ends) on POST /agui: a RunAgentInput in,
// its event stream out as Server-Sent Events, mapped onto the same durable
// chat turns as GraphQL's startChat, chatStream and decideToolCall — through
// the same resolvers, so the same authorization, validation, turn limit and
// token budget apply.
//
// A run is a turn, or the part of it that follows an interrupt:
//   - the thread's last message is the user's: a turn starts with it
//     (threadId is the session; none: a new one, named in RUN_STARTED). The
//     turn's idempotency key is the thread and the message's id, so sending
//     the same input again — a reconnect — follows the same turn;
//   - resume entries answer interrupts (tool calls waiting for approval:
//     status resolved approves unless the payload says {"approved": false},
//     cancelled denies), then the run follows their turn;
//   - the last message is the assistant's reply of a turn (its id is the
//     turn's): a reconnect, the run follows that turn.
//
// Either way the run shows only what the client's messages do not hold
// already (mapper.go). Files: protocol.go the wire types, mapper.go the
// chunk-to-event mapping, this file the HTTP side.
package agui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/daca-go/daca/graph"
	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/httpx"
	"github.com/daca-go/daca/internal/logging"
)

// Turns is what a run needs of the GraphQL resolvers (Resolvers adapts
// graph.Resolver): each checks its arguments against the caller.
type Turns interface {
	StartChat(ctx context.Context, in model.SendMessageInput) (*model.ChatRun, error)
	DecideToolCall(ctx context.Context, approvalID string, approve bool, reason *string) (*model.Approval, error)
	ChatStream(ctx context.Context, instanceID string, after *int) (<-chan *model.ChatChunk, error)
	ChatRun(ctx context.Context, instanceID string) (*model.ChatRun, error)
}

// Resolvers are the GraphQL resolvers as Turns.
func Resolvers(r *graph.Resolver) Turns { return resolvers{r} }

type resolvers struct{ r *graph.Resolver }

func (x resolvers) StartChat(ctx context.Context, in model.SendMessageInput) (*model.ChatRun, error) {
	return x.r.Mutation().StartChat(ctx, in)
}

func (x resolvers) DecideToolCall(ctx context.Context, id string, approve bool, reason *string) (*model.Approval, error) {
	return x.r.Mutation().DecideToolCall(ctx, id, approve, reason)
}

func (x resolvers) ChatStream(ctx context.Context, id string, after *int) (<-chan *model.ChatChunk, error) {
	return x.r.Subscription().ChatStream(ctx, id, after)
}

func (x resolvers) ChatRun(ctx context.Context, id string) (*model.ChatRun, error) {
	return x.r.Query().ChatRun(ctx, id)
}

// Handler serves POST /agui.
type Handler struct {
	Turns Turns
	// Callers authenticates the caller (AUTH_MODE=jwt); nil or not
	// enabled: forwardedProps.userId names the user.
	Callers graph.Callers
	Log     *slog.Logger
	// KeepAlive is how often a quiet stream sends an SSE comment; default 15s.
	KeepAlive time.Duration
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h.serve(w, r); err != nil {
		httpx.Error(w, r, h.Log, err)
	}
}

// serve answers errors before the stream starts (returned: HTTP status and
// JSON, as every other HTTP error of the apps) and after it (RUN_ERROR).
func (h *Handler) serve(w http.ResponseWriter, r *http.Request) error {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return apperr.New(apperr.Invalid, "send the RunAgentInput as application/json")
	}
	var in Input
	if err := httpx.Decode(w, r, &in); err != nil {
		return err
	}
	if err := in.check(); err != nil {
		return err
	}
	ctx := r.Context()
	user, err := h.user(ctx, in)
	if err != nil {
		return err
	}
	ctx = logging.With(ctx, h.Log, "agui_run_id", in.RunID, "user_id", user)
	instance, session, answered, err := h.begin(ctx, in, user)
	if err != nil {
		return err
	}
	// Follow the turn before the first event is written: an unknown or
	// another user's turn is still an HTTP error.
	chunks, err := h.Turns.ChatStream(ctx, instance, nil)
	if err != nil {
		return err
	}
	ahead := &lookahead{ch: chunks}
	m := newMapper(instance, in.Messages, answered, ahead.pending)
	s := newStream(w)
	if s == nil {
		return apperr.New(apperr.Internal, "streaming is not supported by this connection")
	}
	if session == "" {
		session = in.ThreadID
	}
	s.send(Event{Type: RunStarted, ThreadID: session, RunID: in.RunID})
	end := h.follow(ctx, s, m, ahead)
	if end.Type == RunError && end.Code == "TURN_FAILED" {
		if run, err := h.Turns.ChatRun(context.WithoutCancel(ctx), instance); err == nil && run != nil && run.Error != nil {
			end.Message = *run.Error
		}
	}
	if end.Type == RunFinished {
		end.ThreadID, end.RunID = session, in.RunID
	}
	s.send(end)
	logging.From(ctx, h.Log).Info("agui run ended", "workflow_instance_id", instance, "event", end.Type, "code", end.Code)
	return nil
}

// user is who the run is for: forwardedProps.userId, else the caller (the
// bearer token's subject). The resolvers check that the caller may act
// for it.
func (h *Handler) user(ctx context.Context, in Input) (string, error) {
	if u := in.userID(); u != "" {
		return u, contract.CheckID("forwardedProps.userId", u)
	}
	if h.Callers == nil || !h.Callers.Enabled() {
		return "", apperr.New(apperr.Invalid, "forwardedProps.userId is required (AUTH_MODE=none: nothing else says who you are)")
	}
	c, err := h.Callers.Caller(ctx)
	if err != nil {
		return "", err
	}
	return c.Subject, nil
}

// begin starts, resumes or finds the run's turn: its instance id, its
// session when known, and the approvals this request answered.
func (h *Handler) begin(ctx context.Context, in Input, user string) (instance, session string, answered map[string]bool, err error) {
	if len(in.Resume) > 0 {
		answered = map[string]bool{}
		for _, e := range in.Resume {
			approve, reason, _ := e.Decision()
			a, err := h.Turns.DecideToolCall(ctx, e.InterruptID, approve, &reason)
			if err != nil {
				return "", "", nil, err
			}
			if instance != "" && a.InstanceID != instance {
				return "", "", nil, apperr.New(apperr.Invalid, "resume answers interrupts of one run at a time")
			}
			instance, session, answered[e.InterruptID] = a.InstanceID, a.SessionID, true
		}
		return instance, session, answered, nil
	}
	last := in.last()
	switch {
	case last == nil:
		return "", "", nil, apperr.New(apperr.Invalid, "messages hold no user message to answer, and resume is empty")
	case last.Role == "user":
		text := last.Text()
		key := "agui:" + in.ThreadID + ":" + last.ID
		if last.ID == "" { // no id to recognise it by: each request is a new turn
			key = "agui:" + in.RunID
		}
		input := model.SendMessageInput{UserID: user, Text: text, IdempotencyKey: &key}
		if in.ThreadID != "" {
			input.SessionID = &in.ThreadID
		}
		run, err := h.Turns.StartChat(ctx, input)
		if err != nil {
			return "", "", nil, err
		}
		return run.InstanceID, deref(run.SessionID), nil, nil
	case last.Role == "assistant" && contract.CheckID("message id", last.ID) == nil:
		return last.ID, "", nil, nil // a reconnect to the turn whose reply this is
	}
	return "", "", nil, apperr.New(apperr.Invalid, "the last message is a %s message: nothing to run (send a user message, or resume)", last.Role)
}

// follow writes the turn's events until the run ends, and returns its last
// event (not yet written).
func (h *Handler) follow(ctx context.Context, s *stream, m *mapper, chunks *lookahead) Event {
	keep := h.KeepAlive
	if keep <= 0 {
		keep = 15 * time.Second
	}
	tick := time.NewTicker(keep)
	defer tick.Stop()
	for {
		select {
		case c, ok := <-chunks.next():
			if !ok {
				if ctx.Err() == nil {
					return Event{Type: RunError, Code: "UNAVAILABLE", Message: "the stream was cut off (too slow a reader, or the gateway is stopping): send the same input again to go on"}
				}
				return Event{Type: RunError, Code: "CANCELLED", Message: "the request ended"}
			}
			evs, end := m.chunk(c)
			for _, ev := range evs {
				s.send(ev)
			}
			if end != nil {
				return *end
			}
		case <-tick.C:
			s.comment("keep-alive")
		case <-ctx.Done():
			return Event{Type: RunError, Code: "CANCELLED", Message: "the request ended"}
		}
	}
}

// lookahead reads a turn's chunks and can look at those already there: a
// replayed request for a decision is followed by the chunk of its decision.
type lookahead struct {
	ch     <-chan *model.ChatChunk
	queued []*model.ChatChunk
	closed bool
	ready  chan *model.ChatChunk
}

// next is the channel the next chunk comes on: a queued one first.
func (l *lookahead) next() <-chan *model.ChatChunk {
	if l.ready == nil {
		l.ready = make(chan *model.ChatChunk, 1)
	}
	if len(l.ready) == 0 && len(l.queued) > 0 {
		l.ready <- l.queued[0]
		l.queued = l.queued[1:]
	}
	switch {
	case len(l.ready) > 0:
		return l.ready
	case l.closed:
		c := make(chan *model.ChatChunk)
		close(c)
		return c
	}
	return l.ch
}

// pending reports whether a request for a decision still waits, as far as
// the chunks already there tell: none of them shows it decided.
func (l *lookahead) pending(approvalID string) bool {
drain:
	for !l.closed {
		select {
		case c, ok := <-l.ch:
			if !ok {
				l.closed = true
				break drain
			}
			l.queued = append(l.queued, c)
		default:
			break drain
		}
	}
	for _, c := range l.queued {
		if tc := c.ToolCall; tc != nil && tc.Approval != nil && tc.Approval.ID == approvalID && tc.Approval.Status != model.ApprovalStatusPending {
			return false
		}
	}
	return true
}

// stream writes Server-Sent Events, each flushed at once.
type stream struct {
	w http.ResponseWriter
	f http.Flusher
}

func newStream(w http.ResponseWriter) *stream {
	f, ok := w.(http.Flusher)
	if !ok {
		return nil
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &stream{w: w, f: f}
}

func (s *stream) send(ev Event) {
	b, err := json.Marshal(ev)
	if err != nil { // every field is a plain value
		panic(errors.New("agui: event not encodable: " + err.Error()))
	}
	fmt.Fprintf(s.w, "data: %s\n\n", b)
	s.f.Flush()
}

func (s *stream) comment(c string) {
	fmt.Fprintf(s.w, ": %s\n\n", c)
	s.f.Flush()
}
