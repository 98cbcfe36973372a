package main

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/daca-go/daca/internal/api"
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
	Complete(ctx context.Context, system string, history []llm.Message, user string) (string, llm.Usage, error)
	Mode() string
}

// backends are what the routes use, handed over once the service is
// connected to its sidecar (nil until then).
type backends struct {
	mem   *store.Memory
	pub   Publisher
	model Model
	jobs  Jobs
}

type srv struct {
	service.Base
	log      *slog.Logger
	backends atomic.Pointer[backends]
	// debounce is SUMMARY_DEBOUNCE: a user's summary is made once the
	// user's turns have paused this long (summaries.go); 0: at every turn.
	debounce time.Duration
}

func newServer(log *slog.Logger, appToken string) *srv {
	return &srv{Base: service.Base{Welcome: "Welcome to the DACA Agent Memory Service! See README.md for the API.", Log: log, AppToken: appToken}, log: log}
}

// ready hands over the memory; the routes answer from then on.
func (s *srv) ready(mem *store.Memory, pub interface {
	Publisher
	service.Sidecar
}, model Model, jobs Jobs) {
	s.backends.Store(&backends{mem: mem, pub: pub, model: model, jobs: jobs})
	s.SetReady(pub, model.Mode())
}

func (s *srv) routes() http.Handler {
	return s.Router(func(r chi.Router) {
		for _, rt := range []struct {
			route api.Route
			h     httpx.HandlerFunc
		}{
			{api.GetMemory, s.getMemory},
			{api.InitializeMemory, s.initialize},
			{api.ForgetUser, s.forgetUser},
			{api.GetConversation, s.getConversation},
			{api.GetContext, s.getContext},
			{api.GetUsage, s.getUsage},
			{api.GetConversations, s.getConversations},
			{api.DeleteConversation, s.deleteConversation},
			{api.GetOwner, s.owner},
			{api.ClaimSession, s.claim},
			{api.ListSessions, s.sessions},
		} {
			r.Method(rt.route.Verb, rt.route.Pattern, httpx.Handle(s.log, rt.h))
		}
		r.Method(api.ConversationEvents.Verb, api.ConversationEvents.Pattern, httpx.Events(s.log, countEvent, s.onConversation))
		r.Method(api.SummaryJob.Verb, api.SummaryJob.Pattern, httpx.Handle(s.log, s.onSummaryJob))
	})
}

func (s *srv) getMemory(w http.ResponseWriter, r *http.Request) error {
	uid, err := httpx.PathID(r, api.ParamUserID)
	if err != nil {
		return err
	}
	p, err := s.backends.Load().mem.Profile(r.Context(), uid)
	if err != nil {
		return err
	}
	httpx.JSON(w, http.StatusOK, p)
	return nil
}

func (s *srv) initialize(w http.ResponseWriter, r *http.Request) error {
	uid, err := httpx.PathID(r, api.ParamUserID)
	if err != nil {
		return err
	}
	var p contract.Profile
	if err := httpx.Decode(w, r, &p); err != nil {
		return err
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"name", p.Name, contract.MaxName}, {"preferred_style", p.PreferredStyle, contract.MaxStyle}, {"user_summary", p.UserSummary, contract.MaxSummary}} {
		if len(f.v) > f.max {
			return apperr.New(apperr.Invalid, "%s is longer than %d bytes", f.name, f.max)
		}
	}
	if p, err = s.backends.Load().mem.Initialize(r.Context(), uid, p); err != nil {
		return err
	}
	httpx.JSON(w, http.StatusOK, contract.InitializeReply{Status: "success", UserID: uid, Metadata: p})
	return nil
}

func (s *srv) forgetUser(w http.ResponseWriter, r *http.Request) error {
	uid, err := httpx.PathID(r, api.ParamUserID)
	if err != nil {
		return err
	}
	n, err := s.backends.Load().mem.ForgetUser(r.Context(), uid)
	if err != nil {
		return err
	}
	httpx.JSON(w, http.StatusOK, contract.ForgetReply{Status: "success", UserID: uid, SessionsDeleted: n})
	return nil
}

func (s *srv) getConversation(w http.ResponseWriter, r *http.Request) error {
	sid, err := httpx.PathID(r, api.ParamSessionID)
	if err != nil {
		return err
	}
	last, err := queryLast(r)
	if err != nil {
		return err
	}
	user := r.URL.Query().Get(api.QueryUserID) // set: only if that user owns the session
	if user != "" {
		if err := contract.CheckID(api.QueryUserID, user); err != nil {
			return err
		}
	}
	h, err := s.backends.Load().mem.History(r.Context(), sid, user, last)
	if err != nil {
		return err
	}
	httpx.JSON(w, http.StatusOK, contract.HistoryReply{History: h})
	return nil
}

// queryLast is the ?last= of a request: how many entries at most (0: all).
func queryLast(r *http.Request) (int, error) {
	v := r.URL.Query().Get(api.QueryLast)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, apperr.New(apperr.Invalid, "last must be a non-negative integer")
	}
	return n, nil
}

// getContext answers what a chat turn starts from: the user's profile and
// the last entries of the session, if the user owns it.
func (s *srv) getContext(w http.ResponseWriter, r *http.Request) error {
	uid, err := httpx.PathID(r, api.ParamUserID)
	if err != nil {
		return err
	}
	sid := r.URL.Query().Get(api.QuerySessionID)
	if err := contract.CheckID(api.QuerySessionID, sid); err != nil {
		return err
	}
	last, err := queryLast(r)
	if err != nil {
		return err
	}
	p, h, err := s.backends.Load().mem.Context(r.Context(), uid, sid, last)
	if err != nil {
		return err
	}
	httpx.JSON(w, http.StatusOK, contract.ContextReply{Profile: p, History: h})
	return nil
}

// getUsage answers what the user's LLM calls took from the start of the
// UTC day of ?since= (RFC 3339; default: today) on.
func (s *srv) getUsage(w http.ResponseWriter, r *http.Request) error {
	uid, err := httpx.PathID(r, api.ParamUserID)
	if err != nil {
		return err
	}
	since := time.Now().UTC()
	if v := r.URL.Query().Get(api.QuerySince); v != "" {
		if since, err = time.Parse(time.RFC3339, v); err != nil {
			return apperr.New(apperr.Invalid, "since must be an RFC 3339 time")
		}
	}
	u, err := s.backends.Load().mem.Usage(r.Context(), uid, since)
	if err != nil {
		return err
	}
	httpx.JSON(w, http.StatusOK, u)
	return nil
}

// getConversations returns the history of several sessions in one answer,
// in the order asked: {"conversations":[{"session_id","history"}]}.
func (s *srv) getConversations(w http.ResponseWriter, r *http.Request) error {
	var in contract.ConversationsRequest
	if err := httpx.Decode(w, r, &in); err != nil {
		return err
	}
	if len(in.SessionIDs) == 0 || len(in.SessionIDs) > contract.MaxBatch {
		return apperr.New(apperr.Invalid, "session_ids must hold 1 to %d ids", contract.MaxBatch)
	}
	for _, id := range in.SessionIDs {
		if err := contract.CheckID("session_ids", id); err != nil {
			return err
		}
	}
	if in.Last < 0 {
		return apperr.New(apperr.Invalid, "last must be a non-negative integer")
	}
	hs, err := s.backends.Load().mem.Histories(r.Context(), in.SessionIDs, in.Last)
	if err != nil {
		return err
	}
	out := contract.ConversationsReply{Conversations: make([]contract.Conversation, len(in.SessionIDs))}
	for i, id := range in.SessionIDs {
		out.Conversations[i] = contract.Conversation{SessionID: id, History: hs[id]}
	}
	httpx.JSON(w, http.StatusOK, out)
	return nil
}

func (s *srv) deleteConversation(w http.ResponseWriter, r *http.Request) error {
	sid, err := httpx.PathID(r, api.ParamSessionID)
	if err != nil {
		return err
	}
	found, err := s.backends.Load().mem.DeleteConversation(r.Context(), sid)
	if err != nil {
		return err
	}
	if !found {
		return apperr.New(apperr.NotFound, "session %s not found", sid)
	}
	httpx.JSON(w, http.StatusOK, contract.DeletedReply{Status: "success", SessionID: sid})
	return nil
}

// owner answers whom a session belongs to (404 for a session nobody has
// started): the gateway's one lookup before it lets a caller at a session.
func (s *srv) owner(w http.ResponseWriter, r *http.Request) error {
	sid, err := httpx.PathID(r, api.ParamSessionID)
	if err != nil {
		return err
	}
	uid, err := s.backends.Load().mem.Owner(r.Context(), sid)
	if err != nil {
		return err
	}
	if uid == "" {
		return apperr.New(apperr.NotFound, "session %s not found", sid)
	}
	httpx.JSON(w, http.StatusOK, contract.Owner{SessionID: sid, UserID: uid})
	return nil
}

// claim records the user who starts a session as its owner (chat-service,
// before a turn's workflow starts); another user's claim gets 403.
func (s *srv) claim(w http.ResponseWriter, r *http.Request) error {
	sid, err := httpx.PathID(r, api.ParamSessionID)
	if err != nil {
		return err
	}
	var in contract.Owner
	if err := httpx.Decode(w, r, &in); err != nil {
		return err
	}
	if err := contract.CheckID("user_id", in.UserID); err != nil {
		return err
	}
	if err := s.backends.Load().mem.Claim(r.Context(), sid, in.UserID); err != nil {
		if apperr.CodeOf(err) == apperr.Forbidden {
			foreignClaims.Inc()
			logging.From(r.Context(), s.log).Warn("session claim refused: another user owns the session", "session_id", sid, "user_id", in.UserID)
		}
		return err
	}
	httpx.JSON(w, http.StatusOK, contract.Owner{SessionID: sid, UserID: in.UserID})
	return nil
}

// casRetries counts the memory's compare-and-swap writes made again (a
// conflict with another writer of the same document, or a failed write).
var casRetries = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "daca_memory_cas_retries_total",
	Help: "Compare-and-swap writes of the memory made again after a conflict or a failure, by document kind (user, session, sessions).",
}, []string{"doc"})

var foreignClaims = promauto.NewCounter(prometheus.CounterOpts{
	Name: "daca_memory_foreign_session_claims_total", Help: "Turns refused because another user owns their session.",
})

func (s *srv) sessions(w http.ResponseWriter, r *http.Request) error {
	uid, err := httpx.PathID(r, api.ParamUserID)
	if err != nil {
		return err
	}
	list, err := s.backends.Load().mem.Sessions(r.Context(), uid)
	if err != nil {
		return err
	}
	httpx.JSON(w, http.StatusOK, contract.SessionsReply{UserID: uid, Sessions: list})
	return nil
}

var foreignEvents = promauto.NewCounter(prometheus.CounterOpts{
	Name: "daca_memory_foreign_session_events_total", Help: "Conversation events dropped because their user does not own the session.",
})

var eventsHandled = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "daca_pubsub_events_total", Help: "Pub/sub events handled, by topic and the status answered to Dapr.",
}, []string{"topic", "status"})

func countEvent(status string) {
	eventsHandled.WithLabelValues(contract.TopicConversations, status).Inc()
}

// onConversation applies a ConversationUpdated (the declarative
// subscription to topic conversations): nil when the event is applied (or
// was already), Drop for an event it can never apply, Retry when the state
// store or the LLM is unavailable.
func (s *srv) onConversation(ctx context.Context, ce contract.CloudEvent, ev *contract.ConversationUpdated) error {
	b := s.backends.Load()
	if b == nil {
		return httpx.Retry("service starting", nil)
	}
	if err := ev.Validate(); err != nil {
		return httpx.Drop(err.Error(), nil)
	}
	log := logging.From(ctx, s.log)
	// An event applied is never left without the summary it leads to: the
	// user's summary job is scheduled before the turn is counted (Apply).
	res, err := b.mem.Apply(ctx, ce.ID, *ev, summarizer(b), s.later(b, ev.UserID))
	if err != nil {
		switch apperr.CodeOf(err) {
		case apperr.Forbidden: // the second lock: never another user's history
			foreignEvents.Inc()
			return httpx.Drop("the event's user does not own the session", err)
		case apperr.Unavailable, apperr.Timeout, apperr.RateLimited:
			return httpx.Retry("a dependency is unavailable", err)
		default:
			return httpx.Drop("cannot be applied", err)
		}
	}
	if res.Duplicate {
		log.Info("duplicate conversation event ignored (already applied)", "session_id", ev.SessionID)
		return nil
	}
	log.Info("conversation event applied", "user_id", ev.UserID, "session_id", ev.SessionID, "entries", res.Entries, "summarized", res.Summarized)
	if res.Summarized {
		s.announce(ctx, b, contract.MemoryUpdated{UserID: ev.UserID, SessionID: ev.SessionID, UserSummary: res.UserSummary}, contract.MemoryEventID(ce.ID))
	}
	return nil
}
