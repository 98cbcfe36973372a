package live

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/testkit"
)

func deliver(t *testing.T, h http.Handler, topic string, ce map[string]any) string {
	t.Helper()
	b, _ := json.Marshal(ce)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/events/"+topic, strings.NewReader(string(b))))
	var out struct{ Status string }
	json.Unmarshal(w.Body.Bytes(), &out)
	return out.Status
}

// TestIntake: a conversation event reaches the feed's subscribers and ends
// the turn's stream; a memory event its user's; a piece of a reply the
// replies; what is malformed is dropped, what is older than the hub is
// acknowledged unseen; the figures count it all.
func TestIntake(t *testing.T) {
	t.Parallel()
	hub := New(Config{Queue: 8, Recent: 4}, nil, testkit.Quiet())
	r := chi.NewRouter()
	hub.Mount(r)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	convs := hub.Conversations.Subscribe(ctx, nil, nil)
	mems := hub.Memories.Subscribe(ctx, func(e *model.MemoryEvent) bool { return e.UserID == "ana" }, nil)
	chunks := hub.Replies.Subscribe(ctx, "chat-1", 0)
	now := time.Now().UTC().Format(time.RFC3339Nano)

	piece := map[string]any{"id": "p1", "time": now, "data": contract.ChatStreamed{InstanceID: "chat-1", Execution: 1, Seq: 1, Delta: "hi", Text: "hi"}}
	if got := deliver(t, r, contract.TopicChatStream, piece); got != contract.DeliverySuccess {
		t.Fatalf("piece: %s", got)
	}
	ev := map[string]any{"id": "chat-1", "time": now, "data": contract.NewConversationUpdated("ana", "s1", "hello", "hi there")}
	if got := deliver(t, r, contract.TopicConversations, ev); got != contract.DeliverySuccess {
		t.Fatalf("conversation: %s", got)
	}
	if e := <-convs; e.EventID != "chat-1" || e.AssistantReply != "hi there" || e.Cursor == "" {
		t.Fatalf("conversation event %+v", e)
	}
	var last *model.ChatChunk
	for c := range chunks { // closed by the turn's end
		last = c
	}
	if last == nil || !last.Done || last.Text != "hi there" || last.Status != model.ChatStatusCompleted {
		t.Fatalf("the stream ended with %+v", last)
	}
	mem := map[string]any{"id": "m1", "time": now, "data": contract.MemoryUpdated{UserID: "ana", SessionID: "s1", UserSummary: "likes tea"}}
	if got := deliver(t, r, contract.TopicMemoryUpdates, mem); got != contract.DeliverySuccess {
		t.Fatalf("memory: %s", got)
	}
	if e := <-mems; e.UserSummary != "likes tea" {
		t.Fatalf("memory event %+v", e)
	}
	old := map[string]any{"id": "chat-old", "time": time.Now().Add(-time.Hour).Format(time.RFC3339Nano), "data": contract.NewConversationUpdated("ana", "s1", "old", "old")}
	if got := deliver(t, r, contract.TopicConversations, old); got != contract.DeliverySuccess {
		t.Fatalf("an event from before the hub: %s", got)
	}
	bad := map[string]any{"id": "p2", "time": now, "data": contract.ChatStreamed{InstanceID: "chat-2", Execution: 2, Seq: 1}}
	if got := deliver(t, r, contract.TopicChatStream, bad); got != contract.DeliveryDrop {
		t.Fatalf("a piece outside its block: %s; want DROP", got)
	}
	if subs, delivered, dropped := hub.Topic(contract.TopicConversations); subs != 1 || delivered != 1 || dropped != 0 {
		t.Fatalf("conversations: %d subscribers, %d delivered, %d dropped", subs, delivered, dropped)
	}
	if n := hub.StreamedTurns(); n != 1 {
		t.Fatalf("%d streamed turns; want 1", n)
	}
	// /dapr/subscribe names every topic on the hub's component.
	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/dapr/subscribe", nil))
	for _, topic := range contract.Topics {
		if !strings.Contains(w.Body.String(), `"topic":"`+topic+`"`) || !strings.Contains(w.Body.String(), contract.GatewayPubSub) {
			t.Fatalf("subscriptions %s lack %s", w.Body, topic)
		}
	}
}
