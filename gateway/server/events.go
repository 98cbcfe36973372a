package server

import (
	"io"
	"net/http"
	"time"

	"github.com/daca-go/daca/graph"
	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/httpx"
	"github.com/daca-go/daca/internal/logging"
)

// subscriptions tells the sidecar which topics to deliver. The component
// gateway-pubsub gives every gateway replica its own consumer group, so each
// replica receives every event.
func (s *Server) subscriptions(w http.ResponseWriter, r *http.Request) {
	subs := []contract.Subscription{}
	for _, t := range contract.Topics {
		subs = append(subs, contract.Subscription{PubSubName: s.cfg.PubSub, Topic: t, Routes: map[string]string{"default": "/events/" + t}})
	}
	httpx.JSON(w, http.StatusOK, subs)
}

// readEvent reads a delivered CloudEvent into v. When ok is false it has
// answered the delivery already: DROP for an event it can never read,
// SUCCESS for one from before this gateway started (a new consumer group
// reads the stream from its start).
func (s *Server) readEvent(w http.ResponseWriter, r *http.Request, v any) (ce contract.CloudEvent, ok bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, contract.MaxEventBody))
	if err == nil {
		ce, err = contract.DecodeCloudEvent(body, v)
	}
	if err != nil {
		logging.From(r.Context(), s.log).Warn("event dropped: malformed", "err", err)
		httpx.JSON(w, http.StatusOK, map[string]string{"status": contract.DeliveryDrop})
		return ce, false
	}
	if !ce.Time.IsZero() && ce.Time.Before(s.started.Add(-5*time.Second)) {
		httpx.JSON(w, http.StatusOK, map[string]string{"status": contract.DeliverySuccess})
		return ce, false
	}
	return ce, true
}

func (s *Server) onConversation(w http.ResponseWriter, r *http.Request) {
	var ev contract.ConversationUpdated
	ce, ok := s.readEvent(w, r, &ev)
	if !ok {
		return
	}
	if ev.EventType == contract.EventConversationUpdated && ev.UserID != "" && ev.SessionID != "" {
		// The turn's end for its chatStream subscribers (the CloudEvent id
		// is the turn's instance id).
		s.res.Replies.Finish(ce.ID, model.ChatStatusCompleted, ev.AssistantReply, true)
		at := ev.SentAt
		if at.IsZero() {
			at = ce.Time
		}
		n := s.res.Conversations.Publish(&model.ConversationEvent{EventID: ce.ID, UserID: ev.UserID, SessionID: ev.SessionID,
			UserMessage: ev.UserMessage, AssistantReply: ev.AssistantReply, Cursor: graph.EventCursor(at, ce.ID)})
		logging.From(r.Context(), s.log).Debug("conversation event fanned out", "cloudevent_id", ce.ID, "subscribers", n)
	}
	httpx.JSON(w, http.StatusOK, map[string]string{"status": contract.DeliverySuccess})
}

func (s *Server) onMemoryUpdate(w http.ResponseWriter, r *http.Request) {
	var ev contract.MemoryUpdated
	ce, ok := s.readEvent(w, r, &ev)
	if !ok {
		return
	}
	if ev.UserID != "" {
		n := s.res.Memories.Publish(&model.MemoryEvent{UserID: ev.UserID, SessionID: ev.SessionID, UserSummary: ev.UserSummary})
		logging.From(r.Context(), s.log).Debug("memory event fanned out", "cloudevent_id", ce.ID, "subscribers", n)
	}
	httpx.JSON(w, http.StatusOK, map[string]string{"status": contract.DeliverySuccess})
}

// onChatStream takes a piece of a reply being written (chatStream).
func (s *Server) onChatStream(w http.ResponseWriter, r *http.Request) {
	var ev contract.ChatStreamed
	if _, ok := s.readEvent(w, r, &ev); !ok {
		return
	}
	if err := ev.Validate(); err != nil {
		logging.From(r.Context(), s.log).Warn("piece of a reply dropped", "err", err)
		httpx.JSON(w, http.StatusOK, map[string]string{"status": contract.DeliveryDrop})
		return
	}
	s.res.Replies.Add(ev)
	httpx.JSON(w, http.StatusOK, map[string]string{"status": contract.DeliverySuccess})
}
