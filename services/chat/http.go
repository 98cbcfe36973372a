package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dapr/durabletask-go/api"
	"github.com/dapr/durabletask-go/workflow"
	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/httpx"
	"github.com/daca-go/daca/internal/logging"
	"github.com/daca-go/daca/internal/service"
	"github.com/daca-go/daca/internal/telemetry"
	"github.com/daca-go/daca/services/chat/turn"
)

// Workflows is the part of the workflow client the service uses.
type Workflows interface {
	ScheduleWorkflow(ctx context.Context, orchestrator string, opts ...workflow.NewWorkflowOptions) (string, error)
	FetchWorkflowMetadata(ctx context.Context, id string, opts ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error)
	WaitForWorkflowCompletion(ctx context.Context, id string, opts ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error)
	TerminateWorkflow(ctx context.Context, id string, opts ...workflow.TerminateOptions) error
}

// Owners records who a session belongs to (agent-memory-service).
type Owners interface {
	// Claim makes sessionID userID's unless another user owns it: then an
	// Invalid error that says so.
	Claim(ctx context.Context, sessionID, userID string) error
}

// running is what the chat routes use once the service is ready.
type running struct {
	wf     Workflows
	owners Owners
}

type srv struct {
	service.Base
	log         *slog.Logger
	chatTimeout time.Duration
	run         atomic.Pointer[running]
}

func newServer(log *slog.Logger, appToken string, chatTimeout time.Duration) *srv {
	return &srv{Base: service.Base{Welcome: "Welcome to the DACA Chat Service! See README.md for the API.", Log: log, AppToken: appToken},
		log: log, chatTimeout: chatTimeout}
}

// ready hands over the workflow client and the session owners; the chat
// routes answer from then on.
func (s *srv) ready(wf Workflows, owners Owners, sidecar service.Sidecar, llmMode string) {
	s.run.Store(&running{wf: wf, owners: owners})
	s.SetReady(sidecar, llmMode)
}

func (s *srv) workflows() Workflows { return s.run.Load().wf }

var turns = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "daca_chat_turns_total", Help: "Chat turns waited for by POST /chat, by outcome (completed, failed, timeout).",
}, []string{"outcome"})

func (s *srv) routes() http.Handler {
	return s.Router(func(r chi.Router) {
		r.Post("/chat", s.chat)
		r.Post("/chat/", s.chat)
		r.Post("/chat/async", s.chatAsync)
		r.Get("/chat/{instance_id}", s.chatStatus)
		r.Post("/chat/{instance_id}/cancel", s.chatCancel)
	})
}

// parse validates a chat request and works out its workflow instance id.
func (s *srv) parse(w http.ResponseWriter, r *http.Request) (turn.Input, string, bool, error) {
	var req contract.ChatRequest
	if err := httpx.Decode(w, r, &req); err != nil {
		return turn.Input{}, "", false, err
	}
	if err := contract.CheckID("user_id", req.UserID); err != nil {
		return turn.Input{}, "", false, err
	}
	if err := contract.CheckMessage(req.Text, req.Tags); err != nil {
		return turn.Input{}, "", false, err
	}
	in := turn.Input{UserID: req.UserID, Text: req.Text, Tags: req.Tags}
	if req.Metadata != nil && req.Metadata.SessionID != "" {
		if err := contract.CheckID("session_id", req.Metadata.SessionID); err != nil {
			return turn.Input{}, "", false, err
		}
		in.SessionID = req.Metadata.SessionID
	}
	key := r.Header.Get(contract.IdempotencyHeader)
	if key == "" {
		if in.SessionID == "" {
			in.SessionID = uuid.NewString()
		}
		return in, "chat-" + uuid.NewString(), false, nil
	}
	if err := contract.CheckIdempotencyKey(contract.IdempotencyHeader, key); err != nil {
		return turn.Input{}, "", false, err
	}
	sum := sha256.Sum256([]byte(req.UserID + "\x00" + key))
	h := hex.EncodeToString(sum[:])
	if in.SessionID == "" {
		in.SessionID = "s-" + h[32:56]
	}
	return in, "chat-" + h[:32], true, nil
}

// start schedules the turn, or finds the one an earlier request with the same
// idempotency key started.
func (s *srv) start(ctx context.Context, wf Workflows, id string, in turn.Input, idempotent bool) error {
	if idempotent {
		if _, err := fetchRun(ctx, wf, id); err == nil {
			logging.From(ctx, s.log).Info("idempotent retry: returning the existing chat turn", "workflow_instance_id", id)
			return nil
		} else if !notFound(err) {
			return apperr.Wrap(apperr.Unavailable, err, "the workflow engine is unavailable")
		}
	}
	in.Trace = telemetry.Carrier(ctx)
	if _, err := wf.ScheduleWorkflow(ctx, turn.WorkflowName, workflow.WithInstanceID(id), workflow.WithInput(in)); err != nil {
		if idempotent && strings.Contains(strings.ToLower(err.Error()), "already exists") {
			return nil // a concurrent request with the same key won the race
		}
		return apperr.Wrap(apperr.Unavailable, err, "the workflow engine is unavailable")
	}
	logging.From(ctx, s.log).Info("chat turn started", "workflow_instance_id", id, "user_id", in.UserID, "session_id", in.SessionID)
	return nil
}

func notFound(err error) bool {
	if errors.Is(err, api.ErrInstanceNotFound) {
		return true
	}
	m := strings.ToLower(err.Error())
	return strings.Contains(m, "not found") || strings.Contains(m, "no such instance")
}

// begin validates a chat request and starts (or finds) its turn. On error
// it has answered already and ok is false.
func (s *srv) begin(w http.ResponseWriter, r *http.Request) (ctx context.Context, in turn.Input, id string, ok bool) {
	in, id, idem, err := s.parse(w, r)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return nil, in, "", false
	}
	ctx = logging.With(r.Context(), s.log, "workflow_instance_id", id)
	// The first lock of a session: it belongs to the user who started it,
	// and no turn of another user's starts on it (the memory service's
	// refusal of a foreign event is the second).
	if err := s.run.Load().owners.Claim(ctx, in.SessionID, in.UserID); err != nil {
		httpx.Error(w, r, s.log, err)
		return nil, in, "", false
	}
	if err := s.start(ctx, s.workflows(), id, in, idem); err != nil {
		httpx.Error(w, r, s.log, err)
		return nil, in, "", false
	}
	return ctx, in, id, true
}

func (s *srv) chat(w http.ResponseWriter, r *http.Request) {
	ctx, _, id, ok := s.begin(w, r)
	if !ok {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, s.chatTimeout)
	defer cancel()
	meta, err := s.workflows().WaitForWorkflowCompletion(wctx, id, workflow.WithFetchPayloads(true))
	if err != nil {
		if wctx.Err() != nil && r.Context().Err() == nil {
			turns.WithLabelValues("timeout").Inc()
			logging.From(ctx, s.log).Warn("chat turn still running at CHAT_TIMEOUT", "timeout", s.chatTimeout.String())
			httpx.JSON(w, http.StatusGatewayTimeout, map[string]any{
				"detail": "the chat turn is still running; poll GET /chat/" + id, "code": string(apperr.Timeout), "instance_id": id,
			})
			return
		}
		httpx.Error(w, r, s.log, apperr.Wrap(apperr.Unavailable, err, "the workflow engine is unavailable"))
		return
	}
	run := describe(id, meta)
	if run.Status != contract.RunCompleted {
		turns.WithLabelValues("failed").Inc()
		logging.From(ctx, s.log).Warn("chat turn did not complete", "status", run.Status, "error", run.Error)
		httpx.JSON(w, http.StatusServiceUnavailable, map[string]any{
			"detail": run.Error, "code": string(apperr.Unavailable), "instance_id": id, "status": run.Status,
		})
		return
	}
	turns.WithLabelValues("completed").Inc()
	httpx.JSON(w, http.StatusOK, contract.ChatReply{UserID: run.out.UserID, Reply: run.out.Reply, Status: run.Status, InstanceID: id,
		Metadata: contract.ReplyMetadata{SessionID: run.out.SessionID, Timestamp: run.out.Timestamp}})
}

func (s *srv) chatAsync(w http.ResponseWriter, r *http.Request) {
	_, in, id, ok := s.begin(w, r)
	if !ok {
		return
	}
	w.Header().Set("Location", "/chat/"+id)
	httpx.JSON(w, http.StatusAccepted, contract.ChatStarted{InstanceID: id, SessionID: in.SessionID})
}

// described is a turn as GET /chat/{id} shows it, with its output decoded.
type described struct {
	contract.ChatRun
	out turn.Output
}

func describe(id string, meta *workflow.WorkflowMetadata) described {
	run := described{ChatRun: contract.ChatRun{InstanceID: id, Status: contract.RunStatus(meta.String())}}
	if meta.CustomStatus != nil && run.Status == contract.RunRunning {
		run.Stage = meta.CustomStatus.GetValue()
	}
	var in turn.Input
	if meta.Input != nil && json.Unmarshal([]byte(meta.Input.GetValue()), &in) == nil {
		run.UserID, run.SessionID = in.UserID, in.SessionID
	}
	switch run.Status {
	case contract.RunCompleted:
		if meta.Output != nil && json.Unmarshal([]byte(meta.Output.GetValue()), &run.out) == nil {
			run.Reply = &run.out.Reply
			ts := run.out.Timestamp
			run.Timestamp = &ts
		}
	case contract.RunFailed:
		run.Error = "the chat turn failed"
		if fd := meta.FailureDetails; fd != nil && strings.HasPrefix(fd.ErrorMessage, "chat turn failed") {
			run.Error = fd.ErrorMessage // our own, client-safe message
		}
	case contract.RunTerminated, contract.RunCanceled:
		run.Error = "the chat turn was stopped"
	}
	return run
}

func (s *srv) chatStatus(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "instance_id")
	if err := contract.CheckID("instance_id", id); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	meta, err := fetchRun(r.Context(), s.workflows(), id)
	if err != nil {
		if notFound(err) {
			httpx.Error(w, r, s.log, apperr.New(apperr.NotFound, "chat turn %s not found", id))
			return
		}
		httpx.Error(w, r, s.log, apperr.Wrap(apperr.Unavailable, err, "the workflow engine is unavailable"))
		return
	}
	httpx.JSON(w, http.StatusOK, describe(id, meta).ChatRun)
}

// chatCancel stops a running turn (Dapr's terminate) and answers its state:
// TERMINATED, or the state it had already ended in (a repeat is harmless).
// What the turn had not published yet never reaches the history.
func (s *srv) chatCancel(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "instance_id")
	if err := contract.CheckID("instance_id", id); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	wf := s.workflows()
	fetch := func() (*workflow.WorkflowMetadata, bool) {
		meta, err := fetchRun(r.Context(), wf, id)
		if err != nil {
			if notFound(err) {
				httpx.Error(w, r, s.log, apperr.New(apperr.NotFound, "chat turn %s not found", id))
			} else {
				httpx.Error(w, r, s.log, apperr.Wrap(apperr.Unavailable, err, "the workflow engine is unavailable"))
			}
			return nil, false
		}
		return meta, true
	}
	meta, ok := fetch()
	if !ok {
		return
	}
	if run := describe(id, meta); !run.Status.Terminal() {
		if err := wf.TerminateWorkflow(r.Context(), id); err != nil && !notFound(err) {
			httpx.Error(w, r, s.log, apperr.Wrap(apperr.Unavailable, err, "the workflow engine is unavailable"))
			return
		}
		logging.From(r.Context(), s.log).Info("chat turn stopped", "workflow_instance_id", id)
		// Terminate returns before the engine has recorded it: wait (briefly)
		// for the end, so the answer says TERMINATED.
		wctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if m, err := wf.WaitForWorkflowCompletion(wctx, id, workflow.WithFetchPayloads(true)); err == nil {
			meta = m
		} else if meta, ok = fetch(); !ok {
			return
		}
	}
	httpx.JSON(w, http.StatusOK, describe(id, meta).ChatRun)
}

// fetchRun reads a turn's workflow metadata. Read right after the turn was
// scheduled, Dapr 1.18.2 sometimes fails with "inbox key … declared in
// metadata but missing from state store" while the workflow's first state
// is being saved: such a read is tried again, briefly.
func fetchRun(ctx context.Context, wf Workflows, id string) (*workflow.WorkflowMetadata, error) {
	var err error
	for attempt, wait := 0, 20*time.Millisecond; attempt < 5; attempt, wait = attempt+1, wait*2 {
		var meta *workflow.WorkflowMetadata
		if meta, err = wf.FetchWorkflowMetadata(ctx, id, workflow.WithFetchPayloads(true)); err == nil || notFound(err) {
			return meta, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
	return nil, err
}
