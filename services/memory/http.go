package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/httpx"
	"github.com/daca-go/daca/internal/llm"
	"github.com/daca-go/daca/internal/logging"
	"github.com/daca-go/daca/internal/memory"
	"github.com/daca-go/daca/internal/service"
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

type deps struct {
	mem   *memory.Memory
	pub   Publisher
	model Model
}

type srv struct {
	service.Base
	log *slog.Logger
	d   atomic.Pointer[deps]
}

func newServer(log *slog.Logger, appToken string) *srv {
	return &srv{Base: service.Base{Welcome: "Welcome to the DACA Agent Memory Service! See README.md for the API.", Log: log, AppToken: appToken}, log: log}
}

// ready hands over the memory; the routes answer from then on.
func (s *srv) ready(mem *memory.Memory, pub interface {
	Publisher
	service.Sidecar
}, model Model) {
	s.d.Store(&deps{mem: mem, pub: pub, model: model})
	s.SetReady(pub, model.Mode())
}

// Topics and limits.
const (
	PubSub             = "pubsub"
	TopicMemoryUpdates = "memory-updates"
	maxName            = 200
	maxStyle           = 64
	maxSummary         = 4096
)

func (s *srv) routes() http.Handler {
	return s.Router(func(r chi.Router) {
		r.Get("/memories/{user_id}", s.getMemory)
		r.Post("/memories/{user_id}/initialize", s.initialize)
		r.Delete("/memories/{user_id}", s.forgetUser)
		r.Get("/conversations/{session_id}", s.getConversation)
		r.Post("/conversations/batch", s.getConversations)
		r.Delete("/conversations/{session_id}", s.deleteConversation)
		r.Get("/users/{user_id}/sessions", s.sessions)
		r.Post("/conversations", s.onConversation)
	})
}

func (s *srv) getMemory(w http.ResponseWriter, r *http.Request) {
	uid := chi.URLParam(r, "user_id")
	if err := httpx.CheckID("user_id", uid); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	p, err := s.d.Load().mem.Profile(r.Context(), uid)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	httpx.JSON(w, http.StatusOK, p)
}

func (s *srv) initialize(w http.ResponseWriter, r *http.Request) {
	uid := chi.URLParam(r, "user_id")
	if err := httpx.CheckID("user_id", uid); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	var p memory.Profile
	if err := httpx.Decode(w, r, &p); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"name", p.Name, maxName}, {"preferred_style", p.PreferredStyle, maxStyle}, {"user_summary", p.UserSummary, maxSummary}} {
		if len(f.v) > f.max {
			httpx.Error(w, r, s.log, apperr.New(apperr.Invalid, "%s is longer than %d bytes", f.name, f.max))
			return
		}
	}
	p, err := s.d.Load().mem.Initialize(r.Context(), uid, p)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	httpx.JSON(w, http.StatusOK, map[string]any{"status": "success", "user_id": uid, "metadata": p})
}

func (s *srv) forgetUser(w http.ResponseWriter, r *http.Request) {
	uid := chi.URLParam(r, "user_id")
	if err := httpx.CheckID("user_id", uid); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	n, err := s.d.Load().mem.ForgetUser(r.Context(), uid)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	httpx.JSON(w, http.StatusOK, map[string]any{"status": "success", "user_id": uid, "sessions_deleted": n})
}

func (s *srv) getConversation(w http.ResponseWriter, r *http.Request) {
	sid := chi.URLParam(r, "session_id")
	if err := httpx.CheckID("session_id", sid); err != nil {
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
	h, err := s.d.Load().mem.History(r.Context(), sid, last)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	httpx.JSON(w, http.StatusOK, map[string]any{"history": h})
}

// getConversations returns the history of several sessions in one answer,
// in the order asked: {"conversations":[{"session_id","history"}]}.
func (s *srv) getConversations(w http.ResponseWriter, r *http.Request) {
	var in struct {
		SessionIDs []string `json:"session_ids"`
		Last       int      `json:"last"`
	}
	if err := httpx.Decode(w, r, &in); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	if len(in.SessionIDs) == 0 || len(in.SessionIDs) > memory.MaxBatch {
		httpx.Error(w, r, s.log, apperr.New(apperr.Invalid, "session_ids must hold 1 to %d ids", memory.MaxBatch))
		return
	}
	for _, id := range in.SessionIDs {
		if err := httpx.CheckID("session_ids", id); err != nil {
			httpx.Error(w, r, s.log, err)
			return
		}
	}
	if in.Last < 0 {
		httpx.Error(w, r, s.log, apperr.New(apperr.Invalid, "last must be a non-negative integer"))
		return
	}
	hs, err := s.d.Load().mem.Histories(r.Context(), in.SessionIDs, in.Last)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	type conv struct {
		SessionID string         `json:"session_id"`
		History   []memory.Entry `json:"history"`
	}
	out := make([]conv, len(in.SessionIDs))
	for i, id := range in.SessionIDs {
		out[i] = conv{SessionID: id, History: hs[id]}
	}
	httpx.JSON(w, http.StatusOK, map[string]any{"conversations": out})
}

func (s *srv) deleteConversation(w http.ResponseWriter, r *http.Request) {
	sid := chi.URLParam(r, "session_id")
	if err := httpx.CheckID("session_id", sid); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	found, err := s.d.Load().mem.DeleteConversation(r.Context(), sid)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	if !found {
		httpx.Error(w, r, s.log, apperr.New(apperr.NotFound, "session %s not found", sid))
		return
	}
	httpx.JSON(w, http.StatusOK, map[string]any{"status": "success", "session_id": sid})
}

func (s *srv) sessions(w http.ResponseWriter, r *http.Request) {
	uid := chi.URLParam(r, "user_id")
	if err := httpx.CheckID("user_id", uid); err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	list, err := s.d.Load().mem.Sessions(r.Context(), uid)
	if err != nil {
		httpx.Error(w, r, s.log, err)
		return
	}
	httpx.JSON(w, http.StatusOK, map[string]any{"user_id": uid, "sessions": list})
}

var eventsHandled = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "daca_pubsub_events_total", Help: "Pub/sub events handled, by topic and the status answered to Dapr.",
}, []string{"topic", "status"})

// Dapr's answers to a delivery.
const (
	statusSuccess = "SUCCESS"
	statusRetry   = "RETRY"
	statusDrop    = "DROP"
)

type cloudEvent struct {
	ID          string          `json:"id"`
	Type        string          `json:"type"`
	Source      string          `json:"source"`
	Topic       string          `json:"topic"`
	Data        json.RawMessage `json:"data"`
	Traceparent string          `json:"traceparent"`
}

// MemoryUpdated is published on memory-updates after an event is applied.
type MemoryUpdated struct {
	UserID      string `json:"user_id"`
	SessionID   string `json:"session_id"`
	UserSummary string `json:"user_summary"`
}

// onConversation is the route of the declarative subscription to topic
// conversations. It answers SUCCESS when the event is applied (or was
// already), DROP for an event it can never apply, and RETRY when the state
// store or the LLM is unavailable.
func (s *srv) onConversation(w http.ResponseWriter, r *http.Request) {
	log := logging.From(r.Context(), s.log)
	answer := func(status, why string, err error) {
		eventsHandled.WithLabelValues("conversations", status).Inc()
		switch status {
		case statusDrop:
			log.Warn("conversation event dropped", "reason", why, "err", err)
		case statusRetry:
			log.Warn("conversation event will be retried", "reason", why, "err", err)
		}
		httpx.JSON(w, http.StatusOK, map[string]string{"status": status})
	}
	d := s.d.Load()
	if d == nil {
		answer(statusRetry, "service starting", nil)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, httpx.MaxBody))
	if err != nil {
		answer(statusDrop, "body unreadable or larger than 1 MiB", err)
		return
	}
	var ce cloudEvent
	if err := json.Unmarshal(body, &ce); err != nil {
		answer(statusDrop, "malformed JSON", err)
		return
	}
	if ce.ID == "" || len(ce.Data) == 0 {
		answer(statusDrop, "not a CloudEvent (no id or data)", nil)
		return
	}
	log = log.With("cloudevent_id", ce.ID)
	if tid := httpx.TraceID(ce.Traceparent); tid != "" {
		log = log.With("trace_id", tid)
	}
	ctx := logging.With(r.Context(), log)
	data := []byte(ce.Data)
	var str string
	if json.Unmarshal(data, &str) == nil { // data published as a JSON string
		data = []byte(str)
	}
	var ev memory.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		answer(statusDrop, "event data is not a ConversationUpdated object", err)
		return
	}
	if ev.EventType != "ConversationUpdated" {
		answer(statusDrop, "foreign event type "+strconv.Quote(ev.EventType), nil)
		return
	}
	if !httpx.ValidID(ev.UserID) || !httpx.ValidID(ev.SessionID) {
		answer(statusDrop, "invalid user_id or session_id", nil)
		return
	}
	if strings.TrimSpace(ev.UserMessage) == "" || strings.TrimSpace(ev.AssistantReply) == "" {
		answer(statusDrop, "user_message or assistant_reply is empty", nil)
		return
	}
	summarize := func(ctx context.Context, p memory.Profile, recent []memory.Entry) (string, error) {
		hist := make([]llm.Message, len(recent))
		for i, e := range recent {
			hist[i] = llm.Message{Role: e.Role, Content: e.Content}
		}
		return d.model.Complete(ctx, llm.SummaryInstructions(p.Name, p.UserSummary), hist, llm.SummaryRequest)
	}
	res, err := d.mem.Apply(ctx, ce.ID, ev, summarize)
	if err != nil {
		switch apperr.CodeOf(err) {
		case apperr.Unavailable, apperr.Timeout, apperr.RateLimited:
			answer(statusRetry, "a dependency is unavailable", err)
		default:
			answer(statusDrop, "cannot be applied", err)
		}
		return
	}
	if res.Duplicate {
		log.Info("duplicate conversation event ignored (already applied)", "session_id", ev.SessionID)
		answer(statusSuccess, "", nil)
		return
	}
	log.Info("conversation event applied", "user_id", ev.UserID, "session_id", ev.SessionID, "entries", res.Entries)
	up := MemoryUpdated{UserID: ev.UserID, SessionID: ev.SessionID, UserSummary: res.UserSummary}
	if err := d.pub.PublishEvent(ctx, PubSub, TopicMemoryUpdates, up,
		dapr.PublishEventWithMetadata(map[string]string{"cloudevent.id": "memory-" + ce.ID})); err != nil {
		// The memory itself is updated; only the live notification is lost.
		log.Error("publishing MemoryUpdated failed", "err", err)
	}
	answer(statusSuccess, "", nil)
}
