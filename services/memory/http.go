package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/httpx"
	"github.com/daca-go/daca/internal/llm"
	"github.com/daca-go/daca/internal/logging"
	"github.com/daca-go/daca/internal/service"
	"github.com/daca-go/daca/services/memory/store"
)

// Publisher publishes pub/sub events through the sidecar.
type Publisher interface {
	PublishEvent(ctx context.Context, pubsubName, topicName string, data interface{}, opts ...dapr.PublishEventOption) error
}

// Model writes summaries.
type Model interface {
	Complete(ctx context.Context, system string, history []llm.Message, user string) (string, error)
	Mode() string
}

// backends are what the routes use, handed over once the service is
// connected to its sidecar (nil until then).
type backends struct {
	mem   *store.Memory
	pub   Publisher
	model Model
}

type srv struct {
	service.Base
	log      *slog.Logger
	backends atomic.Pointer[backends]
}

func newServer(log *slog.Logger, appToken string) *srv {
	return &srv{Base: service.Base{Welcome: "Welcome to the DACA Agent Memory Service! See README.md for the API.", Log: log, AppToken: appToken}, log: log}
}

// ready hands over the memory; the routes answer from then on.
func (s *srv) ready(mem *store.Memory, pub interface {
	Publisher
	service.Sidecar
}, model Model) {
	s.backends.Store(&backends{mem: mem, pub: pub, model: model})
	s.SetReady(pub, model.Mode())
}

func (s *srv) routes() http.Handler {
	return s.Router(func(r chi.Router) {
		r.Get("/memories/{user_id}", s.getMemory)
		r.Post("/memories/{user_id}/initialize", s.initialize)
		r.Delete("/memories/{user_id}", s.forgetUser)
		r.Get("/conversations/{session_id}", s.getConversation)
		r.Post("/conversations/batch", s.getConversations)
		r.Delete("/conversations/{session_id}", s.deleteConversation)
		r.Get("/owners/{session_id}", s.owner)
		r.Put("/owners/{session_id}", s.claim)
		r.Get("/users/{user_id}/sessions", s.sessions)
		r.Post("/conversations", s.onConversation)
	})
}

func (s *srv) getMemory(w http.ResponseWriter, r *http.Request) {
	uid := chi.URLParam(r, "user_id")
	if err := contract.CheckID("user_id", uid); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	p, err := s.backends.Load().mem.Profile(r.Context(), uid)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	httpx.JSON(w, http.StatusOK, p)
}

func (s *srv) initialize(w http.ResponseWriter, r *http.Request) {
	uid := chi.URLParam(r, "user_id")
	if err := contract.CheckID("user_id", uid); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	var p contract.Profile
	if err := httpx.Decode(w, r, &p); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"name", p.Name, contract.MaxName}, {"preferred_style", p.PreferredStyle, contract.MaxStyle}, {"user_summary", p.UserSummary, contract.MaxSummary}} {
		if len(f.v) > f.max {
			httpx.Error(w, r, s.log, apperr.New(apperr.Invalid, "%s is longer than %d bytes", f.name, f.max))
			return
		}
	}
	p, err := s.backends.Load().mem.Initialize(r.Context(), uid, p)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	httpx.JSON(w, http.StatusOK, contract.InitializeReply{Status: "success", UserID: uid, Metadata: p})
}

func (s *srv) forgetUser(w http.ResponseWriter, r *http.Request) {
	uid := chi.URLParam(r, "user_id")
	if err := contract.CheckID("user_id", uid); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	n, err := s.backends.Load().mem.ForgetUser(r.Context(), uid)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	httpx.JSON(w, http.StatusOK, contract.ForgetReply{Status: "success", UserID: uid, SessionsDeleted: n})
}

func (s *srv) getConversation(w http.ResponseWriter, r *http.Request) {
	sid := chi.URLParam(r, "session_id")
	if err := contract.CheckID("session_id", sid); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	last := 0
	if v := r.URL.Query().Get("last"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			httpx.Error(w, r, s.log, apperr.New(apperr.Invalid, "last must be a non-negative integer"))
			return
		}
		last = n
	}
	user := r.URL.Query().Get("user_id") // set: only if that user owns the session
	if user != "" {
		if err := contract.CheckID("user_id", user); err != nil {
			httpx.Error(w, r, s.log, err)
			return
		}
	}
	h, err := s.backends.Load().mem.History(r.Context(), sid, user, last)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	httpx.JSON(w, http.StatusOK, contract.HistoryReply{History: h})
}

// getConversations returns the history of several sessions in one answer,
// in the order asked: {"conversations":[{"session_id","history"}]}.
func (s *srv) getConversations(w http.ResponseWriter, r *http.Request) {
	var in contract.ConversationsRequest
	if err := httpx.Decode(w, r, &in); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	if len(in.SessionIDs) == 0 || len(in.SessionIDs) > contract.MaxBatch {
		httpx.Error(w, r, s.log, apperr.New(apperr.Invalid, "session_ids must hold 1 to %d ids", contract.MaxBatch))
		return
	}
	for _, id := range in.SessionIDs {
		if err := contract.CheckID("session_ids", id); err != nil {
			httpx.Error(w, r, s.log, err)
			return
		}
	}
	if in.Last < 0 {
		httpx.Error(w, r, s.log, apperr.New(apperr.Invalid, "last must be a non-negative integer"))
		return
	}
	hs, err := s.backends.Load().mem.Histories(r.Context(), in.SessionIDs, in.Last)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	out := contract.ConversationsReply{Conversations: make([]contract.Conversation, len(in.SessionIDs))}
	for i, id := range in.SessionIDs {
		out.Conversations[i] = contract.Conversation{SessionID: id, History: hs[id]}
	}
	httpx.JSON(w, http.StatusOK, out)
}

func (s *srv) deleteConversation(w http.ResponseWriter, r *http.Request) {
	sid := chi.URLParam(r, "session_id")
	if err := contract.CheckID("session_id", sid); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	found, err := s.backends.Load().mem.DeleteConversation(r.Context(), sid)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	if !found {
		httpx.Error(w, r, s.log, apperr.New(apperr.NotFound, "session %s not found", sid))
		return
	}
	httpx.JSON(w, http.StatusOK, contract.DeletedReply{Status: "success", SessionID: sid})
}

// owner answers whom a session belongs to (404 for a session nobody has
// started): the gateway's one lookup before it lets a caller at a session.
func (s *srv) owner(w http.ResponseWriter, r *http.Request) {
	sid := chi.URLParam(r, "session_id")
	if err := contract.CheckID("session_id", sid); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	uid, err := s.backends.Load().mem.Owner(r.Context(), sid)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	if uid == "" {
		httpx.Error(w, r, s.log, apperr.New(apperr.NotFound, "session %s not found", sid))
		return
	}
	httpx.JSON(w, http.StatusOK, contract.Owner{SessionID: sid, UserID: uid})
}

// claim records the user who starts a session as its owner (chat-service,
// before a turn's workflow starts); another user's claim gets 403.
func (s *srv) claim(w http.ResponseWriter, r *http.Request) {
	sid := chi.URLParam(r, "session_id")
	if err := contract.CheckID("session_id", sid); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	var in contract.Owner
	if err := httpx.Decode(w, r, &in); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	if err := contract.CheckID("user_id", in.UserID); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	if err := s.backends.Load().mem.Claim(r.Context(), sid, in.UserID); err != nil {
		if apperr.CodeOf(err) == apperr.Forbidden {
			foreignClaims.Inc()
			logging.From(r.Context(), s.log).Warn("session claim refused: another user owns the session", "session_id", sid, "user_id", in.UserID)
		}
		httpx.Error(w, r, s.log, err)
		return
	}
	httpx.JSON(w, http.StatusOK, contract.Owner{SessionID: sid, UserID: in.UserID})
}

var foreignClaims = promauto.NewCounter(prometheus.CounterOpts{
	Name: "daca_memory_foreign_session_claims_total", Help: "Turns refused because another user owns their session.",
})

func (s *srv) sessions(w http.ResponseWriter, r *http.Request) {
	uid := chi.URLParam(r, "user_id")
	if err := contract.CheckID("user_id", uid); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	list, err := s.backends.Load().mem.Sessions(r.Context(), uid)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	httpx.JSON(w, http.StatusOK, contract.SessionsReply{UserID: uid, Sessions: list})
}

var foreignEvents = promauto.NewCounter(prometheus.CounterOpts{
	Name: "daca_memory_foreign_session_events_total", Help: "Conversation events dropped because their user does not own the session.",
})

var eventsHandled = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "daca_pubsub_events_total", Help: "Pub/sub events handled, by topic and the status answered to Dapr.",
}, []string{"topic", "status"})

// onConversation is the route of the declarative subscription to topic
// conversations. It answers SUCCESS when the event is applied (or was
// already), DROP for an event it can never apply, and RETRY when the state
// store or the LLM is unavailable.
func (s *srv) onConversation(w http.ResponseWriter, r *http.Request) {
	log := logging.From(r.Context(), s.log)
	answer := func(status, why string, err error) {
		eventsHandled.WithLabelValues(contract.TopicConversations, status).Inc()
		switch status {
		case contract.DeliveryDrop:
			log.Warn("conversation event dropped", "reason", why, "err", err)
		case contract.DeliveryRetry:
			log.Warn("conversation event will be retried", "reason", why, "err", err)
		}
		httpx.JSON(w, http.StatusOK, map[string]string{"status": status})
	}
	b := s.backends.Load()
	if b == nil {
		answer(contract.DeliveryRetry, "service starting", nil)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, contract.MaxEventBody))
	if err != nil {
		answer(contract.DeliveryDrop, "body unreadable or larger than 1 MiB", err)
		return
	}
	var ev contract.ConversationUpdated
	ce, err := contract.DecodeCloudEvent(body, &ev)
	if ce.ID != "" {
		log = log.With("cloudevent_id", ce.ID)
	}
	if err != nil {
		answer(contract.DeliveryDrop, "not a ConversationUpdated CloudEvent", err)
		return
	}
	if tid := httpx.TraceID(ce.Traceparent); tid != "" {
		log = log.With("trace_id", tid)
	}
	ctx := logging.With(r.Context(), log)
	if err := ev.Validate(); err != nil {
		answer(contract.DeliveryDrop, err.Error(), nil)
		return
	}
	summarize := func(ctx context.Context, p contract.Profile, recent []contract.Entry) (string, error) {
		hist := make([]llm.Message, len(recent))
		for i, e := range recent {
			hist[i] = llm.Message{Role: e.Role, Content: e.Content}
		}
		return b.model.Complete(ctx, llm.SummaryInstructions(p.Name, p.UserSummary), hist, llm.SummaryRequest)
	}
	res, err := b.mem.Apply(ctx, ce.ID, ev, summarize)
	if err != nil {
		switch apperr.CodeOf(err) {
		case apperr.Forbidden: // the second lock: never another user's history
			foreignEvents.Inc()
			answer(contract.DeliveryDrop, "the event's user does not own the session", err)
		case apperr.Unavailable, apperr.Timeout, apperr.RateLimited:
			answer(contract.DeliveryRetry, "a dependency is unavailable", err)
		default:
			answer(contract.DeliveryDrop, "cannot be applied", err)
		}
		return
	}
	if res.Duplicate {
		log.Info("duplicate conversation event ignored (already applied)", "session_id", ev.SessionID)
		answer(contract.DeliverySuccess, "", nil)
		return
	}
	log.Info("conversation event applied", "user_id", ev.UserID, "session_id", ev.SessionID, "entries", res.Entries)
	up := contract.MemoryUpdated{UserID: ev.UserID, SessionID: ev.SessionID, UserSummary: res.UserSummary}
	if err := b.pub.PublishEvent(ctx, contract.PubSub, contract.TopicMemoryUpdates, up,
		dapr.PublishEventWithMetadata(map[string]string{contract.CloudEventIDMetadata: contract.MemoryEventID(ce.ID)})); err != nil {
		// The memory itself is updated; only the live notification is lost.
		log.Error("publishing MemoryUpdated failed", "err", err)
	}
	answer(contract.DeliverySuccess, "", nil)
}
