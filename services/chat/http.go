package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/httpx"
	"github.com/daca-go/daca/internal/logging"
	"github.com/daca-go/daca/internal/service"
	"github.com/daca-go/daca/internal/telemetry"
	"github.com/daca-go/daca/services/chat/session"
	"github.com/daca-go/daca/services/chat/turn"
)

// Owners records who a session belongs to (agent-memory-service).
type Owners interface {
	// Claim makes sessionID userID's unless another user owns it: then an
	// Invalid error that says so.
	Claim(ctx context.Context, sessionID, userID string) error
}

// Approvals are the requests of tool calls that wait for a decision
// (approval.Store).
type Approvals interface {
	Get(ctx context.Context, id string) (*contract.Approval, error)
	Pending(ctx context.Context, userID string) ([]contract.Approval, error)
	Decide(ctx context.Context, id string, d contract.Decision) (contract.Approval, error)
	EndTurn(ctx context.Context, instanceID string) error
}

// Sessions run each session's turns one at a time (session.Client: the
// session actors).
type Sessions interface {
	Accept(ctx context.Context, req session.Accept) (session.Accepted, error)
	Done(ctx context.Context, sessionID, id string) error
	Drop(ctx context.Context, sessionID, id string) (bool, error)
}

// running is what the chat routes use once the service is ready.
type running struct {
	turns     turn.Client
	owners    Owners
	tools     turn.Tools
	approvals Approvals
	sessions  Sessions
}

// accept hands a turn to its session; a session busy with another turn
// refuses it under on_busy REJECT: Conflict.
func (rn *running) accept(ctx context.Context, req session.Accept) (session.Accepted, error) {
	got, err := rn.sessions.Accept(ctx, req)
	if err != nil {
		return got, err
	}
	if got.Refused {
		return got, apperr.New(apperr.Conflict, "session %s is busy with chat turn %s (on_busy: REJECT)", req.Input.SessionID, got.Running)
	}
	return got, nil
}

// srv is chat-service's HTTP API (api.Chat, api.ChatAsync, api.GetChatRun,
// api.CancelChat, api.ListTools, api.PendingApprovals, api.GetApproval,
// api.DecideApproval); the turns themselves are turn.Client's, the
// approvals approval.Store's.
type srv struct {
	service.Base
	log         *slog.Logger
	chatTimeout time.Duration
	limits      turn.Input // the agent's limits (MaxSteps, ToolResultMax, ApprovalTimeout) every turn gets
	run         atomic.Pointer[running]
	// actor is the session actor Dapr calls (package session); its routes
	// (Base.Actors) wait until the service is ready.
	actor *session.Actor
	// budget is the daily token budget per user; nil: none.
	budget *budget
}

func newServer(log *slog.Logger, appToken string, chatTimeout time.Duration) *srv {
	actor := &session.Actor{Log: log}
	return &srv{Base: service.Base{Welcome: "Welcome to the DACA Chat Service! See README.md for the API.", Log: log, AppToken: appToken,
		Early: session.Config, Actors: func(r chi.Router) { actor.Mount(r, log) }}, log: log, chatTimeout: chatTimeout, actor: actor}
}

// ready hands over the workflow client and the session owners; the chat
// routes answer from then on.
func (s *srv) ready(turns turn.Client, owners Owners, tools turn.Tools, approvals Approvals, sessions Sessions, sidecar service.Sidecar, llmMode string) {
	s.run.Store(&running{turns: turns, owners: owners, tools: tools, approvals: approvals, sessions: sessions})
	s.SetReady(sidecar, llmMode)
}

func (s *srv) turns() turn.Client { return s.run.Load().turns }

var turns = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "daca_chat_turns_total", Help: "Chat turns waited for by POST /chat, by outcome (completed, failed, timeout).",
}, []string{"outcome"})

func (s *srv) routes() http.Handler {
	return s.Router(func(r chi.Router) {
		for _, rt := range []struct {
			route api.Route
			h     httpx.HandlerFunc
		}{
			{api.Chat, s.chat},
			{api.Route{Verb: api.Chat.Verb, Pattern: api.Chat.Pattern + "/"}, s.chat},
			{api.ChatAsync, s.chatAsync},
			{api.GetChatRun, s.chatStatus},
			{api.CancelChat, s.chatCancel},
			{api.ListTools, s.tools},
			{api.PendingApprovals, s.pendingApprovals},
			{api.GetApproval, s.approval},
			{api.DecideApproval, s.decide},
		} {
			r.Method(rt.route.Verb, rt.route.Pattern, httpx.Handle(s.log, rt.h))
		}
	})
}

// parse validates a chat request and works out its workflow instance id.
func (s *srv) parse(w http.ResponseWriter, r *http.Request) (in turn.Input, id string, idem bool, policy contract.BusyPolicy, err error) {
	var req contract.ChatRequest
	if err := httpx.Decode(w, r, &req); err != nil {
		return turn.Input{}, "", false, "", err
	}
	if err := contract.CheckID("user_id", req.UserID); err != nil {
		return turn.Input{}, "", false, "", err
	}
	if err := contract.CheckMessage(req.Text, req.Tags); err != nil {
		return turn.Input{}, "", false, "", err
	}
	if err := req.OnBusy.Check(); err != nil {
		return turn.Input{}, "", false, "", err
	}
	in = s.limits
	in.UserID, in.Text, in.Tags = req.UserID, req.Text, req.Tags
	if req.Metadata != nil && req.Metadata.SessionID != "" {
		if err := contract.CheckID("session_id", req.Metadata.SessionID); err != nil {
			return turn.Input{}, "", false, "", err
		}
		in.SessionID = req.Metadata.SessionID
	}
	key := r.Header.Get(contract.IdempotencyHeader)
	if key == "" {
		if in.SessionID == "" {
			in.SessionID = uuid.NewString()
		}
		return in, "chat-" + uuid.NewString(), false, req.OnBusy, nil
	}
	if err := contract.CheckIdempotencyKey(contract.IdempotencyHeader, key); err != nil {
		return turn.Input{}, "", false, "", err
	}
	sum := sha256.Sum256([]byte(req.UserID + "\x00" + key))
	h := hex.EncodeToString(sum[:])
	if in.SessionID == "" {
		in.SessionID = "s-" + h[32:56]
	}
	return in, "chat-" + h[:32], true, req.OnBusy, nil
}

// begin validates a chat request and hands its turn to its session, which
// starts it, queues it behind the running one, or refuses it (on_busy);
// it answers the turn's id and whether it started or waits.
func (s *srv) begin(w http.ResponseWriter, r *http.Request) (ctx context.Context, in turn.Input, id string, status contract.RunStatus, err error) {
	in, id, idem, policy, err := s.parse(w, r)
	if err != nil {
		return nil, in, "", "", err
	}
	ctx = logging.With(r.Context(), s.log, "workflow_instance_id", id)
	// The first lock of a session: it belongs to the user who started it,
	// and no turn of another user's starts on it (the memory service's
	// refusal of a foreign event is the second).
	rn := s.run.Load()
	if err := rn.owners.Claim(ctx, in.SessionID, in.UserID); err != nil {
		return nil, in, "", "", err
	}
	if idem { // a repeated request: the turn the first one started
		run, err := rn.turns.Get(ctx, id)
		if err == nil && run.Status == contract.RunPending {
			// Created, not started: the session may not know it (its accept
			// failed after the workflow was scheduled, while replicas
			// restarted). A repeated accept changes nothing for a turn the
			// session has; one it lacks becomes its running (or a waiting)
			// turn, so that the session's order holds when it runs.
			// A session that refuses it now (busy, on_busy REJECT) never
			// runs it: it is stopped before it starts outside the order.
			if _, err := rn.accept(ctx, session.Accept{InstanceID: id, Input: in, Policy: policy}); err != nil {
				if apperr.CodeOf(err) == apperr.Conflict {
					if serr := rn.turns.Stop(ctx, id); serr != nil {
						return nil, in, "", "", serr
					}
				}
				return nil, in, "", "", err
			}
		}
		if err == nil {
			logging.From(ctx, s.log).Info("idempotent retry: returning the existing chat turn")
			return ctx, in, id, run.Status, nil
		}
		if apperr.CodeOf(err) != apperr.NotFound { // unknown whether it exists: never start it twice
			return nil, in, "", "", err
		}
	}
	if err := s.budget.check(ctx, in.UserID); err != nil {
		return nil, in, "", "", err
	}
	in.Trace = telemetry.Carrier(ctx)
	// Fresh: a new id, or one just found unknown.
	got, err := rn.accept(ctx, session.Accept{InstanceID: id, Input: in, Policy: policy, Fresh: true})
	if err != nil {
		return nil, in, "", "", err
	}
	if got.Status == contract.RunQueued {
		logging.From(ctx, s.log).Info("chat turn queued behind the session's running turn", "session_id", in.SessionID, "running", got.Running)
	}
	return ctx, in, id, got.Status, nil
}

func (s *srv) chat(w http.ResponseWriter, r *http.Request) error {
	ctx, _, id, _, err := s.begin(w, r)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, s.chatTimeout)
	defer cancel()
	run, err := s.turns().Wait(wctx, id)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
			turns.WithLabelValues("timeout").Inc()
			logging.From(ctx, s.log).Warn("chat turn still running at CHAT_TIMEOUT", "timeout", s.chatTimeout.String())
			httpx.JSON(w, http.StatusGatewayTimeout, map[string]any{
				"detail": "the chat turn is still running; poll GET /chat/" + id, "code": string(apperr.Timeout), "instance_id": id,
			})
			return nil
		}
		return apperr.Wrap(apperr.Unavailable, err, "the workflow engine is unavailable")
	}
	if run.Status != contract.RunCompleted {
		turns.WithLabelValues("failed").Inc()
		logging.From(ctx, s.log).Warn("chat turn did not complete", "status", run.Status, "error", run.Error)
		httpx.JSON(w, http.StatusServiceUnavailable, map[string]any{
			"detail": run.Error, "code": string(apperr.Unavailable), "instance_id": id, "status": run.Status,
		})
		return nil
	}
	turns.WithLabelValues("completed").Inc()
	httpx.JSON(w, http.StatusOK, contract.ChatReply{UserID: run.Output.UserID, Reply: run.Output.Reply, Status: run.Status, InstanceID: id,
		Metadata: contract.ReplyMetadata{SessionID: run.Output.SessionID, Timestamp: run.Output.Timestamp}})
	return nil
}

func (s *srv) chatAsync(w http.ResponseWriter, r *http.Request) error {
	_, in, id, status, err := s.begin(w, r)
	if err != nil {
		return err
	}
	if status != contract.RunQueued {
		status = contract.RunPending
	}
	w.Header().Set("Location", "/"+api.GetChatRun.Path(id))
	httpx.JSON(w, http.StatusAccepted, contract.ChatStarted{InstanceID: id, SessionID: in.SessionID, Status: status})
	return nil
}

func (s *srv) chatStatus(w http.ResponseWriter, r *http.Request) error {
	id, err := httpx.PathID(r, api.ParamInstanceID)
	if err != nil {
		return err
	}
	run, err := s.turns().Get(r.Context(), id)
	if err != nil {
		return err
	}
	httpx.JSON(w, http.StatusOK, run.ChatRun)
	return nil
}

// tools answers the tools the agent can use now (turn.Catalog).
func (s *srv) tools(w http.ResponseWriter, r *http.Request) error {
	list := s.run.Load().tools.Tools(r.Context())
	out := contract.ToolsReply{Tools: make([]contract.ToolInfo, len(list))}
	for i, t := range list {
		out.Tools[i] = contract.ToolInfo{Name: t.Name, Server: t.Server, Description: t.Description, ReadOnly: t.ReadOnly}
	}
	httpx.JSON(w, http.StatusOK, out)
	return nil
}

// chatCancel stops a turn and answers its state: a running one is
// terminated (turn.Client.Cancel) and its session handed on; a waiting one
// leaves its session's queue.
func (s *srv) chatCancel(w http.ResponseWriter, r *http.Request) error {
	id, err := httpx.PathID(r, api.ParamInstanceID)
	if err != nil {
		return err
	}
	ctx, rn := r.Context(), s.run.Load()
	run, err := rn.turns.Get(ctx, id)
	if err != nil {
		return err
	}
	if run.Status == contract.RunQueued {
		if _, err := rn.sessions.Drop(ctx, run.SessionID, id); err != nil {
			return err
		}
		logging.From(ctx, s.log).Info("waiting chat turn cancelled", "workflow_instance_id", id, "session_id", run.SessionID)
		if run, err = rn.turns.Get(ctx, id); err != nil { // started meanwhile: stop it
			return err
		}
	}
	if !run.Status.Terminal() {
		if run, err = rn.turns.Cancel(ctx, id); err != nil {
			return err
		}
		if err := rn.sessions.Done(ctx, run.SessionID, id); err != nil {
			logging.From(ctx, s.log).Warn("the stopped turn's session is handed on by its reminder", "workflow_instance_id", id, "err", err)
		}
	}
	// A call the turn waited on can no longer be decided.
	if err := rn.approvals.EndTurn(ctx, id); err != nil {
		logging.From(ctx, s.log).Warn("the stopped turn's approval request stays pending until it expires", "workflow_instance_id", id, "err", err)
	}
	httpx.JSON(w, http.StatusOK, run.ChatRun)
	return nil
}

// pendingApprovals answers the user's requests that wait for a decision.
func (s *srv) pendingApprovals(w http.ResponseWriter, r *http.Request) error {
	user, err := httpx.PathID(r, api.ParamUserID)
	if err != nil {
		return err
	}
	list, err := s.run.Load().approvals.Pending(r.Context(), user)
	if err != nil {
		return err
	}
	httpx.JSON(w, http.StatusOK, contract.ApprovalsReply{Approvals: list})
	return nil
}

// approval answers one request.
func (s *srv) approval(w http.ResponseWriter, r *http.Request) error {
	id, err := httpx.PathID(r, api.ParamApprovalID)
	if err != nil {
		return err
	}
	a, err := s.run.Load().approvals.Get(r.Context(), id)
	if err != nil {
		return err
	}
	if a == nil {
		return apperr.New(apperr.NotFound, "approval %s not found", id)
	}
	httpx.JSON(w, http.StatusOK, a)
	return nil
}

// decide records a decision on a request (the caller — the gateway —
// checked who may decide) and answers the request.
func (s *srv) decide(w http.ResponseWriter, r *http.Request) error {
	id, err := httpx.PathID(r, api.ParamApprovalID)
	if err != nil {
		return err
	}
	var d contract.Decision
	if err := httpx.Decode(w, r, &d); err != nil {
		return err
	}
	a, err := s.run.Load().approvals.Decide(r.Context(), id, d)
	if err != nil {
		return err
	}
	logging.From(r.Context(), s.log).Info("tool call decided", "approval_id", id, "status", a.Status, "decided_by", a.DecidedBy)
	httpx.JSON(w, http.StatusOK, a)
	return nil
}
