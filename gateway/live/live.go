// Package live is the gateway's pub/sub intake: the routes its sidecar
// delivers events to, and what they feed — the conversation and memory
// feeds (fanout.Broker) and the replies being written (replies.Store) that
// the resolvers' subscriptions read (graph.ConversationFeed, graph.Feed,
// graph.Replies). gateway/server mounts it behind the app token and reports
// its figures.
package live

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/daca-go/daca/gateway/fanout"
	"github.com/daca-go/daca/gateway/replies"
	"github.com/daca-go/daca/graph"
	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/httpx"
	"github.com/daca-go/daca/internal/logging"
)

// Hub is the intake and the feeds it fills.
type Hub struct {
	Conversations *fanout.Broker[*model.ConversationEvent]
	Memories      *fanout.Broker[*model.MemoryEvent]
	Approvals     *fanout.Broker[*contract.Approval]
	Replies       *replies.Store

	pubsub  string
	log     *slog.Logger
	started time.Time
}

// Config of a Hub.
type Config struct {
	// Queue is how many events a subscriber may have unread before it is
	// dropped as too slow (onDrop, then its channel closed).
	Queue int
	// Recent is how many conversation events are kept for subscribers that
	// resume (conversationUpdated with after).
	Recent int
	// PubSub is the component the gateway subscribes with (a consumer group
	// per replica); default contract.GatewayPubSub.
	PubSub string
}

// New returns a hub whose slow subscribers are reported to onDrop.
func New(cfg Config, onDrop func(context.Context), log *slog.Logger) *Hub {
	if cfg.PubSub == "" {
		cfg.PubSub = contract.GatewayPubSub
	}
	return &Hub{
		Conversations: fanout.New[*model.ConversationEvent](cfg.Queue, onDrop).KeepRecent(cfg.Recent),
		Memories:      fanout.New[*model.MemoryEvent](cfg.Queue, onDrop),
		Approvals:     fanout.New[*contract.Approval](cfg.Queue, onDrop),
		Replies:       replies.New(cfg.Queue, onDrop),
		pubsub:        cfg.PubSub, log: log, started: time.Now(),
	}
}

// Mount adds the routes: /dapr/subscribe and one /events/<topic> per topic.
func (h *Hub) Mount(r chi.Router) {
	r.Get("/dapr/subscribe", h.subscriptions)
	r.Post("/events/"+contract.TopicConversations, httpx.Events(h.log, nil, h.onConversation))
	r.Post("/events/"+contract.TopicMemoryUpdates, httpx.Events(h.log, nil, h.onMemoryUpdate))
	r.Post("/events/"+contract.TopicChatStream, httpx.Events(h.log, nil, h.onChatStream))
	r.Post("/events/"+contract.TopicApprovals, httpx.Events(h.log, nil, h.onApproval))
}

// Run sweeps the finished replies every interval until ctx ends.
func (h *Hub) Run(ctx context.Context, interval time.Duration) { h.Replies.Run(ctx, interval) }

// subscriptions tells the sidecar which topics to deliver. The component
// gateway-pubsub gives every gateway replica its own consumer group, so each
// replica receives every event.
func (h *Hub) subscriptions(w http.ResponseWriter, r *http.Request) {
	subs := []contract.Subscription{}
	for _, t := range contract.Topics {
		subs = append(subs, contract.Subscription{PubSubName: h.pubsub, Topic: t, Routes: map[string]string{"default": "/events/" + t}})
	}
	httpx.JSON(w, http.StatusOK, subs)
}

// stale reports an event from before this gateway started: a new consumer
// group reads the stream from its start, and those are answered SUCCESS
// unseen.
func (h *Hub) stale(ce contract.CloudEvent) bool {
	return !ce.Time.IsZero() && ce.Time.Before(h.started.Add(-5*time.Second))
}

func (h *Hub) onConversation(ctx context.Context, ce contract.CloudEvent, ev *contract.ConversationUpdated) error {
	if h.stale(ce) || ev.EventType != contract.EventConversationUpdated || ev.UserID == "" || ev.SessionID == "" {
		return nil
	}
	// The turn's end for its chatStream subscribers (the CloudEvent id is
	// the turn's instance id), with the final state of any tool call whose
	// piece did not arrive.
	h.Replies.Tools(ce.ID, ev.ToolCalls)
	h.Replies.Finish(ce.ID, model.ChatStatusCompleted, ev.AssistantReply, true)
	at := ev.SentAt
	if at.IsZero() {
		at = ce.Time
	}
	n := h.Conversations.Publish(&model.ConversationEvent{EventID: ce.ID, UserID: ev.UserID, SessionID: ev.SessionID,
		UserMessage: ev.UserMessage, AssistantReply: ev.AssistantReply, Cursor: graph.EventCursor(at, ce.ID)})
	logging.From(ctx, h.log).Debug("conversation event fanned out", "subscribers", n)
	return nil
}

func (h *Hub) onMemoryUpdate(ctx context.Context, ce contract.CloudEvent, ev *contract.MemoryUpdated) error {
	if h.stale(ce) || ev.UserID == "" {
		return nil
	}
	n := h.Memories.Publish(&model.MemoryEvent{UserID: ev.UserID, SessionID: ev.SessionID, UserSummary: ev.UserSummary})
	logging.From(ctx, h.log).Debug("memory event fanned out", "subscribers", n)
	return nil
}

// onChatStream takes a piece of a reply being written (chatStream).
func (h *Hub) onChatStream(_ context.Context, ce contract.CloudEvent, ev *contract.ChatStreamed) error {
	if h.stale(ce) {
		return nil
	}
	if err := ev.Validate(); err != nil {
		return httpx.Drop("not a piece of a reply", err)
	}
	h.Replies.Add(*ev)
	return nil
}

// onApproval takes a request for a decision, or its change: for
// approvalRequested, and for the chatStream of its turn (the call's chunk
// with the request).
func (h *Hub) onApproval(ctx context.Context, ce contract.CloudEvent, ev *contract.Approval) error {
	if h.stale(ce) {
		return nil
	}
	if !contract.ValidID(ev.ID) || !contract.ValidID(ev.InstanceID) || !contract.ValidID(ev.UserID) {
		return httpx.Drop("not an approval", errors.New("missing or malformed ids"))
	}
	h.Replies.Approval(ev.InstanceID, *ev)
	n := h.Approvals.Publish(ev)
	logging.From(ctx, h.log).Debug("approval fanned out", "approval_id", ev.ID, "status", ev.Status, "subscribers", n)
	return nil
}

// Topic reports a topic's open subscriptions, the events delivered to
// subscribers and the slow subscribers dropped (chat-stream: subscriptions
// only).
func (h *Hub) Topic(topic string) (subscribers int, delivered, dropped uint64) {
	switch topic {
	case contract.TopicConversations:
		delivered, dropped = h.Conversations.Stats()
		return h.Conversations.Len(), delivered, dropped
	case contract.TopicMemoryUpdates:
		delivered, dropped = h.Memories.Stats()
		return h.Memories.Len(), delivered, dropped
	case contract.TopicChatStream:
		_, n := h.Replies.Len()
		return n, 0, 0
	case contract.TopicApprovals:
		delivered, dropped = h.Approvals.Stats()
		return h.Approvals.Len(), delivered, dropped
	}
	return 0, 0, 0
}

// StreamedTurns is how many turns' replies are kept for chatStream (while
// they run, and a minute after).
func (h *Hub) StreamedTurns() int { n, _ := h.Replies.Len(); return n }
