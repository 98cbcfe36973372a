package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/daca-go/daca/gateway/auth"
	"github.com/daca-go/daca/graph/graphtest"
	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// The HTTP surface's tests: error presentation, HTTP guards, metrics, the
// pub/sub intake and the websocket protocol, around a resolver over an
// in-memory backend. What the resolvers answer is tested in graph.

// The websocket transport: subscriptions fed by the pub/sub intake, the
// protocol guard's close codes, slow subscribers and shutdown.

// wsDial opens a websocket to the server and sends connection_init.
func wsDial(t *testing.T, url, proto string, init map[string]any) *testkit.WSClient {
	t.Helper()
	ws := testkit.DialWS(t, url+"/graphql", proto)
	ws.Send(map[string]any{"type": "connection_init", "payload": init})
	return ws
}

// publishEvent posts an event to the gateway as its sidecar would.
func publishEvent(t *testing.T, url, topic, id string, data any) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"id": id, "time": time.Now().UTC(), "topic": topic, "data": data})
	resp, err := http.Post(url+"/events/"+topic, "application/cloudevents+json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "SUCCESS") {
		t.Fatalf("event answer %s", body)
	}
}

func TestSubscriptionFanOutAndCleanup(t *testing.T) {
	f := graphtest.New()
	s, h := newServer(f, Config{}, 4, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()

	ws := wsDial(t, srv.URL, "graphql-transport-ws", nil)
	ws.Await(5*time.Second, "connection_ack")
	ws.Send(map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{"query": `subscription { conversationUpdated(userId: "ana") { eventId sessionId userMessage } }`}})
	ws.Send(map[string]any{"id": "2", "type": "subscribe", "payload": map[string]any{"query": `subscription { memoryUpdated(userId: "ana") { userSummary } }`}})
	ws.Send(map[string]any{"id": "3", "type": "subscribe", "payload": map[string]any{"query": `subscription { conversationUpdated { eventId } }`}})
	if m := ws.Await(5*time.Second, "error", "next"); m["id"] != "3" || !strings.Contains(fmt.Sprint(m), "give sessionId") {
		t.Fatalf("unfiltered subscription: %v", m)
	}
	waitUntil(t, "s.hub.Conversations.Len() == 1 && s.hub.Memories.Len() == 1", func() bool { return s.hub.Conversations.Len() == 1 && s.hub.Memories.Len() == 1 })
	publishEvent(t, srv.URL, "conversations", "e0", map[string]string{"user_id": "bo", "session_id": "x", "event_type": "ConversationUpdated", "user_message": "not for ana", "assistant_reply": "r"})
	publishEvent(t, srv.URL, "conversations", "e1", map[string]string{"user_id": "ana", "session_id": "s1", "event_type": "ConversationUpdated", "user_message": "for ana", "assistant_reply": "r"})
	publishEvent(t, srv.URL, "memory-updates", "m1", map[string]string{"user_id": "ana", "session_id": "s1", "user_summary": "new summary"})
	// The two subscriptions deliver independently: take both, in any order.
	byID := map[any]map[string]any{}
	for range 2 {
		m := ws.Await(5*time.Second, "next")
		byID[m["id"]] = m
	}
	if m := byID["1"]; !strings.Contains(fmt.Sprint(m), "for ana") || strings.Contains(fmt.Sprint(m), "not for ana") {
		t.Fatalf("conversation event = %v", m)
	}
	if m := byID["2"]; !strings.Contains(fmt.Sprint(m), "new summary") {
		t.Fatalf("memory event = %v", m)
	}
	// A stale event (from before the gateway started) is not pushed.
	b, _ := json.Marshal(map[string]any{"id": "old", "time": time.Now().Add(-time.Hour), "data": map[string]string{"user_id": "ana", "session_id": "s1", "event_type": "ConversationUpdated", "user_message": "old", "assistant_reply": "r"}})
	http.Post(srv.URL+"/events/conversations", "application/json", strings.NewReader(string(b)))
	publishEvent(t, srv.URL, "conversations", "e2", map[string]string{"user_id": "ana", "session_id": "s1", "event_type": "ConversationUpdated", "user_message": "fresh", "assistant_reply": "r"})
	if m := ws.Await(5*time.Second, "next"); !strings.Contains(fmt.Sprint(m), "fresh") {
		t.Fatalf("after a stale event got %v", m)
	}
	ws.Close()
	waitUntil(t, "s.hub.Conversations.Len() == 0 && s.hub.Memories.Len() == 0", func() bool { return s.hub.Conversations.Len() == 0 && s.hub.Memories.Len() == 0 })
}

// TestChatStream: pieces published by chat-service reach a chatStream
// subscriber in order of seq (whatever order they came in), with the tool
// call; the conversation event ends the stream with the reply; a
// subscriber that joins late, or resumes with after, gets the text so far
// first; another user's turn is not found.
func TestChatStream(t *testing.T) {
	f := graphtest.New()
	f.Runs["chat-live"] = &contract.ChatRun{InstanceID: "chat-live", Status: contract.RunRunning, UserID: "ana", SessionID: "s1"}
	s, h := newServer(f, Config{}, 16, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	const q = `subscription($id: ID!, $after: Int) { chatStream(instanceId: $id, after: $after) { seq delta text status done restarted toolCall { name arguments result } } }`
	piece := func(seq int, delta, text string, tool map[string]string) map[string]any {
		p := map[string]any{"instance_id": "chat-live", "user_id": "ana", "execution": 1, "seq": seq, "delta": delta, "text": text}
		if tool != nil {
			p["tool_call"] = tool
		}
		return p
	}
	ws := wsDial(t, srv.URL, "graphql-transport-ws", nil)
	ws.Await(5*time.Second, "connection_ack")
	ws.Subscribe("1", q, map[string]any{"id": "chat-live"})
	waitUntil(t, "one chatStream subscriber", func() bool { _, n := s.hub.Replies.Len(); return n == 1 })
	publishEvent(t, srv.URL, "chat-stream", "p1", piece(1, "Let me ", "Let me ", nil))
	publishEvent(t, srv.URL, "chat-stream", "p3", piece(3, "It is now.", "Let me check. It is now.", nil))
	publishEvent(t, srv.URL, "chat-stream", "p2", piece(2, "check. ", "Let me check. ", map[string]string{"name": "get_current_time", "arguments": "{}", "result": "now"}))
	chunk := func(ws *testkit.WSClient, id string) map[string]any {
		t.Helper()
		return ws.Data(id, 5*time.Second)["chatStream"].(map[string]any)
	}
	var text string
	for want := 1; want <= 3; want++ {
		c := chunk(ws, "1")
		if int(c["seq"].(float64)) != want || c["done"] != false || c["status"] != "RUNNING" {
			t.Fatalf("chunk %d: %v", want, c)
		}
		text += c["delta"].(string)
		if c["text"] != text {
			t.Fatalf("text %q; the deltas make %q", c["text"], text)
		}
		if tc, _ := c["toolCall"].(map[string]any); (want == 2) != (tc != nil) || want == 2 && (tc["name"] != "get_current_time" || tc["result"] != "now") {
			t.Fatalf("chunk %d tool call %v", want, c["toolCall"])
		}
	}
	// A second subscriber resumes after 2: chunk 3 first.
	late := wsDial(t, srv.URL, "graphql-transport-ws", nil)
	late.Await(5*time.Second, "connection_ack")
	late.Subscribe("r", q, map[string]any{"id": "chat-live", "after": 2})
	if c := chunk(late, "r"); int(c["seq"].(float64)) != 3 || c["delta"] != "It is now." {
		t.Fatalf("resumed after 2: %v", c)
	}
	// The turn's conversation event ends both streams with the reply.
	f.Mu.Lock()
	reply := "Let me check. It is now. Bye."
	f.Runs["chat-live"] = &contract.ChatRun{InstanceID: "chat-live", Status: contract.RunCompleted, UserID: "ana", SessionID: "s1", Reply: &reply}
	f.Mu.Unlock()
	publishEvent(t, srv.URL, "conversations", "chat-live", map[string]string{"user_id": "ana", "session_id": "s1", "event_type": "ConversationUpdated", "user_message": "time?", "assistant_reply": reply})
	for _, c := range []struct {
		ws *testkit.WSClient
		id string
	}{{ws, "1"}, {late, "r"}} {
		end := chunk(c.ws, c.id)
		if int(end["seq"].(float64)) != 4 || end["done"] != true || end["status"] != "COMPLETED" || end["delta"] != " Bye." || end["text"] != reply {
			t.Fatalf("last chunk %v", end)
		}
		if m := c.ws.Await(5*time.Second, "complete"); m["id"] != c.id {
			t.Fatalf("after the last chunk: %v", m)
		}
	}
	// A finished turn streams its end at once; an unknown turn is NOT_FOUND.
	ws.Subscribe("2", q, map[string]any{"id": "chat-1"})
	if c := chunk(ws, "2"); c["done"] != true || c["text"] != "hi ana" {
		t.Fatalf("finished turn: %v", c)
	}
	ws.Subscribe("3", q, map[string]any{"id": "chat-unknown"})
	if m := ws.Await(5*time.Second, "error", "next"); m["id"] != "3" || !strings.Contains(fmt.Sprint(m), "NOT_FOUND") {
		t.Fatalf("unknown turn: %v", m)
	}
}

func TestThousandSubscribeCyclesBackToBaseline(t *testing.T) {
	s, h := newServer(graphtest.New(), Config{}, 0, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	ws := wsDial(t, srv.URL, "graphql-transport-ws", nil)
	ws.Await(5*time.Second, "connection_ack")
	// Warm up one cycle, then measure.
	cycle := func(i int) {
		id := fmt.Sprint(i)
		ws.Send(map[string]any{"id": id, "type": "subscribe", "payload": map[string]any{"query": `subscription { memoryUpdated(userId: "ana") { userSummary } }`}})
		ws.Send(map[string]any{"id": id, "type": "complete"})
	}
	cycle(0)
	waitUntil(t, "s.hub.Memories.Len() == 0", func() bool { return s.hub.Memories.Len() == 0 })
	before := settledGoroutines()
	for i := 1; i <= 1000; i++ {
		cycle(i)
	}
	testkit.WaitFor(t, 10*time.Second, "every subscription and its goroutines gone", func() error {
		if s.hub.Memories.Len() != 0 || runtime.NumGoroutine() > before {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			return fmt.Errorf("after 1,000 cycles: %d subscribers, %d goroutines (baseline %d)\n%s", s.hub.Memories.Len(), runtime.NumGoroutine(), before, buf[:n])
		}
		return nil
	})
	ws.Close()
}

// TestIdleSubscriptionsHoldNoGoroutine: conversationUpdated and
// memoryUpdated wake the websocket transport (wstransport.Waker), so open
// subscriptions hold no goroutine each, and one event still reaches all.
func TestIdleSubscriptionsHoldNoGoroutine(t *testing.T) {
	const n = 100
	s, h := newServer(graphtest.New(), Config{}, 0, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	ws := wsDial(t, srv.URL, "graphql-transport-ws", nil)
	defer ws.Close()
	ws.Await(5*time.Second, "connection_ack")
	before := settledGoroutines()
	for i := range n {
		q := `subscription { conversationUpdated(sessionId: "s1") { userMessage } }`
		if i%2 == 1 {
			q = `subscription { memoryUpdated(userId: "ana") { userSummary } }`
		}
		ws.Subscribe(fmt.Sprint(i), q, nil)
	}
	waitUntil(t, "all subscribed", func() bool { return s.hub.Conversations.Len()+s.hub.Memories.Len() == n })
	if d := settledGoroutines() - before; d > 10 {
		t.Fatalf("%d idle subscriptions added %d goroutines", n, d)
	}
	publishEvent(t, srv.URL, "conversations", "e1", map[string]string{"user_id": "ana", "session_id": "s1", "event_type": "ConversationUpdated", "user_message": "hello", "assistant_reply": "r"})
	publishEvent(t, srv.URL, "memory-updates", "m1", map[string]string{"user_id": "ana", "session_id": "s1", "user_summary": "likes tea"})
	for i := range n {
		d := fmt.Sprint(ws.Data(fmt.Sprint(i), 5*time.Second))
		if want := map[bool]string{true: "hello", false: "likes tea"}[i%2 == 0]; !strings.Contains(d, want) {
			t.Fatalf("subscription %d got %s; want %q", i, d, want)
		}
	}
}

// settledGoroutines returns the goroutine count once it has not changed for
// 200 ms (goroutines of earlier tests may still be winding down).
func settledGoroutines() int {
	n, same := runtime.NumGoroutine(), 0
	for same < 20 {
		time.Sleep(10 * time.Millisecond)
		if m := runtime.NumGoroutine(); m == n {
			same++
		} else {
			n, same = m, 0
		}
	}
	return n
}

func TestWebsocketAuth(t *testing.T) {
	g := &auth.Guard{Mode: "jwt", Verifier: staticVerifier{"tok-ana": {Subject: "ana"}}}
	_, h := newServer(graphtest.New(), Config{}, 0, g)
	srv := httptest.NewServer(h)
	defer srv.Close()
	tests := []struct {
		name string
		init map[string]any
		ok   bool
	}{
		{"no token", nil, false},
		{"bad token", map[string]any{"Authorization": "Bearer forged"}, false},
		{"good token", map[string]any{"Authorization": "Bearer tok-ana"}, true},
		{"token field", map[string]any{"token": "tok-ana"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := wsDial(t, srv.URL, "graphql-transport-ws", tt.init)
			defer ws.Conn().CloseNow()
			if tt.ok {
				ws.Await(5*time.Second, "connection_ack")
				ws.Send(map[string]any{"id": "x", "type": "subscribe", "payload": map[string]any{"query": `subscription { memoryUpdated(userId: "bo") { userSummary } }`}})
				m := ws.Await(5*time.Second, "error", "next")
				if !strings.Contains(fmt.Sprint(m), "FORBIDDEN") {
					t.Fatalf("subscribing to another user: %v", m)
				}
				return
			}
			if code := ws.Closed(5 * time.Second); code != closeForbidden {
				t.Fatalf("closed with %d (%v); want 4403", code, ws.Err())
			}
		})
	}
}

// closeCode waits for the server to close c and returns the close code (-1
// for a closure without a close frame). It fails the test if c stays open.
func closeCode(t *testing.T, c *websocket.Conn) websocket.StatusCode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if _, _, err := c.Read(ctx); err != nil {
			if ctx.Err() != nil {
				t.Fatal("the server did not close the connection within 10s")
			}
			return websocket.CloseStatus(err)
		}
	}
}

func TestWebsocketProtocolClosures(t *testing.T) {
	_, h := newServer(graphtest.New(), Config{KeepAlive: 200 * time.Millisecond, InitTimeout: 300 * time.Millisecond}, 0, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	t.Run("second connection_init closes with 4429", func(t *testing.T) {
		ws := wsDial(t, srv.URL, "graphql-transport-ws", nil)
		defer ws.Conn().CloseNow()
		ws.Await(5*time.Second, "connection_ack")
		ws.Send(map[string]any{"type": "connection_init"})
		if c := ws.Closed(10 * time.Second); c != closeTooManyInitReqs {
			t.Fatalf("close %d; want 4429", c)
		}
	})
	t.Run("no connection_init closes with 4408", func(t *testing.T) {
		c, _, err := websocket.Dial(t.Context(), strings.Replace(srv.URL, "http", "ws", 1)+"/graphql", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if code := closeCode(t, c); code != 4408 {
			t.Fatalf("close %d; want 4408", code)
		}
	})
	t.Run("a peer that never answers ping is closed", func(t *testing.T) {
		ws := wsDial(t, srv.URL, "graphql-transport-ws", nil)
		ws.Silent = true
		defer ws.Conn().CloseNow()
		ws.Await(5*time.Second, "connection_ack")
		ws.Await(5*time.Second, "ping") // and never pong
		ws.Closed(10 * time.Second)
	})
	t.Run("legacy graphql-ws gets ka", func(t *testing.T) {
		ws := wsDial(t, srv.URL, "graphql-ws", nil)
		defer ws.Conn().CloseNow()
		ws.Await(5*time.Second, "connection_ack")
		ws.Await(5*time.Second, "ka")
	})
}

// TestSlowSubscriberClosedWithReason: a client that stops reading is
// dropped once its buffer is full; its socket is closed with 1013 and a
// reason (no silent complete first), while a client that reads gets every
// event.
func TestSlowSubscriberClosedWithReason(t *testing.T) {
	for _, tt := range []struct{ proto, subscribe, next string }{
		{"graphql-transport-ws", "subscribe", "next"},
		{"graphql-ws", "start", "data"},
	} {
		t.Run(tt.proto, func(t *testing.T) {
			s, h := newServer(graphtest.New(), Config{}, 4, nil)
			srv := httptest.NewServer(h)
			defer srv.Close()
			sub := func() *testkit.WSClient {
				ws := wsDial(t, srv.URL, tt.proto, nil)
				ws.Conn().SetReadLimit(1 << 20) // read by hand below: the slow one never, the fast one raw
				ws.Send(map[string]any{"id": "1", "type": tt.subscribe, "payload": map[string]any{"query": `subscription { conversationUpdated(userId: "ana") { userMessage } }`}})
				return ws
			}
			slow, fast := sub(), sub()
			defer slow.Conn().CloseNow()
			defer fast.Conn().CloseNow()
			waitUntil(t, "s.hub.Conversations.Len() == 2", func() bool { return s.hub.Conversations.Len() == 2 })
			got := make(chan struct{})
			go func() {
				for {
					_, b, err := fast.Conn().Read(context.Background())
					if err != nil {
						return
					}
					if strings.Contains(string(b), `"`+tt.next+`"`) {
						got <- struct{}{}
					}
				}
			}()
			big := strings.Repeat("x", 64<<10) // fills the slow client's TCP buffers quickly
			sent := 0
			for _, dropped := s.hub.Conversations.Stats(); dropped == 0; _, dropped = s.hub.Conversations.Stats() {
				if sent == 5000 {
					t.Fatal("the slow subscriber was never dropped")
				}
				s.hub.Conversations.Publish(&model.ConversationEvent{EventID: fmt.Sprint(sent), UserID: "ana", SessionID: "s", UserMessage: big, AssistantReply: "r"})
				sent++
				select { // the reading client keeps up, event by event
				case <-got:
				case <-time.After(10 * time.Second):
					t.Fatalf("the reading client did not get event %d", sent)
				}
			}
			if n := s.hub.Conversations.Len(); n != 1 {
				t.Fatalf("%d subscribers after the drop; want the reading one", n)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for {
				_, b, err := slow.Conn().Read(ctx)
				if err != nil {
					var ce websocket.CloseError
					if !errors.As(err, &ce) || ce.Code != closeTryAgainLater || !strings.Contains(ce.Reason, "too slow: 4 events unread") {
						t.Fatalf("slow client closed with %v; want 1013 and a reason", err)
					}
					break
				}
				if strings.Contains(string(b), `"complete"`) || strings.Contains(string(b), `"error"`) {
					t.Fatalf("slow client got %.80s before the close; want events and keepalives only", b)
				}
			}
			s.hub.Conversations.Publish(&model.ConversationEvent{EventID: "after", UserID: "ana", SessionID: "s", UserMessage: "after", AssistantReply: "r"})
			select {
			case <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("the reading client stopped getting events after the drop")
			}
		})
	}
}

// TestShutdownClosesWebsockets: at shutdown every websocket, of either
// protocol, is closed with 1001 and a reason, and CloseWebsockets returns
// once their handlers are done.
func TestShutdownClosesWebsockets(t *testing.T) {
	s, h := newServer(graphtest.New(), Config{}, 0, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	var clients []*testkit.WSClient
	for _, p := range []struct{ proto, subscribe string }{{"graphql-transport-ws", "subscribe"}, {"graphql-ws", "start"}} {
		ws := wsDial(t, srv.URL, p.proto, nil)
		defer ws.Conn().CloseNow()
		ws.Await(5*time.Second, "connection_ack")
		ws.Send(map[string]any{"id": "1", "type": p.subscribe, "payload": map[string]any{"query": `subscription { memoryUpdated(userId: "ana") { userSummary } }`}})
		clients = append(clients, ws)
	}
	waitUntil(t, "s.hub.Memories.Len() == 2", func() bool { return s.hub.Memories.Len() == 2 })
	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.CloseWebsockets(ctx)
		close(done)
	}()
	for _, ws := range clients {
		code := ws.Closed(10 * time.Second)
		var ce websocket.CloseError
		if code != closeGoingAway || !errors.As(ws.Err(), &ce) || !strings.Contains(ce.Reason, "shutting down") {
			t.Fatalf("closed with %d (%v); want 1001 and a reason", code, ws.Err())
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("CloseWebsockets did not return")
	}
	waitUntil(t, "s.hub.Memories.Len() == 0", func() bool { return s.hub.Memories.Len() == 0 })
	s.CloseWebsockets(t.Context()) // nothing open: returns at once
}

// TestSocketsForgottenWhenClosed: every way a websocket ends removes it from
// the set that shutdown closes (no leak per connection).
func TestSocketsForgottenWhenClosed(t *testing.T) {
	s, h := newServer(graphtest.New(), Config{InitTimeout: 200 * time.Millisecond}, 0, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	for i := range 10 {
		for _, proto := range []string{"graphql-transport-ws", "graphql-ws"} {
			ws := wsDial(t, srv.URL, proto, nil)
			ws.Await(5*time.Second, "connection_ack")
			switch i % 3 {
			case 0:
				ws.Close()
			case 1:
				ws.Conn().CloseNow()
			case 2:
				ws.Send(map[string]any{"type": "nonsense"})
				ws.Closed(10 * time.Second)
			}
		}
		c, _, err := websocket.Dial(t.Context(), strings.Replace(srv.URL, "http", "ws", 1)+"/graphql", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
		if err != nil {
			t.Fatal(err)
		}
		closeCode(t, c) // no connection_init: closed by the server
	}
	waitUntil(t, "s.sockets.len() == 0", func() bool { return s.sockets.len() == 0 })
}

// TestWebsocketFrameAnswers: each kind of frame gets the answer that fits
// it — the graphql-transport-ws close code the protocol names, or the
// message it must answer with — not merely "some" code or silence.
func TestWebsocketFrameAnswers(t *testing.T) {
	_, h := newServer(graphtest.New(), Config{InitTimeout: 2 * time.Second}, 0, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	const query = `{"id":"1","type":"subscribe","payload":{"query":"{ health { status } }"}}`
	tests := []struct {
		name   string
		legacy bool
		init   bool // send connection_init (and take its ack) first
		frames []string
		close  int    // the close code it must get; 0: none
		answer string // else the message type it must get back
	}{
		{"not JSON", false, true, []string{`not json`}, 4400, ""},
		{"no type", false, true, []string{`{"id":"1"}`}, 4400, ""},
		{"type not a string", false, true, []string{`{"type":1}`}, 4400, ""},
		{"id not a string", false, true, []string{`{"id":1,"type":"subscribe","payload":{}}`}, 4400, ""},
		{"type in another case", false, true, []string{`{"tYpe":"subscribe","id":"1"}`}, 4400, ""},
		{"unknown type", false, true, []string{`{"type":"nonsense"}`}, 4400, ""},
		{"subscribe without id", false, true, []string{`{"type":"subscribe","payload":{"query":"{ health { status } }"}}`}, 4400, ""},
		{"subscribe before connection_init", false, false, []string{query}, 4401, ""},
		{"complete before connection_init", false, false, []string{`{"id":"1","type":"complete"}`}, 4401, ""},
		{"a second connection_init", false, true, []string{`{"type":"connection_init"}`}, 4429, ""},
		{"a duplicate id", false, true, []string{`{"id":"d","type":"subscribe","payload":{"query":"subscription { memoryUpdated(userId: \"ana\") { userId } }"}}`,
			`{"id":"d","type":"subscribe","payload":{"query":"subscription { memoryUpdated(userId: \"ana\") { userId } }"}}`}, 4409, ""},
		{"no connection_init at all", false, false, nil, 4408, ""},
		{"ping", false, true, []string{`{"type":"ping"}`}, 0, "pong"},
		{"ping before connection_init (found by the fuzzer: it got 1002)", false, false, []string{`{"type":"ping"}`}, 0, "pong"},
		{"a query", false, true, []string{query}, 0, "next"},
		{"a query over legacy graphql-ws", true, true, []string{`{"id":"1","type":"start","payload":{"query":"{ health { status } }"}}`}, 0, "data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proto := "graphql-transport-ws"
			if tt.legacy {
				proto = "graphql-ws"
			}
			ws := testkit.DialWS(t, srv.URL+"/graphql", proto)
			ws.Silent = true // this test answers nothing on its own
			if tt.init {
				ws.Send(map[string]any{"type": "connection_init"})
				ws.Await(5*time.Second, "connection_ack")
			}
			for _, f := range tt.frames {
				ws.SendRaw(f)
			}
			if tt.close != 0 {
				if got := ws.Closed(10 * time.Second); int(got) != tt.close {
					t.Fatalf("closed with %d (%v); want %d", got, ws.Err(), tt.close)
				}
				return
			}
			if m := ws.Await(5*time.Second, tt.answer); m["type"] != tt.answer {
				t.Fatalf("got %v; want %s", m, tt.answer)
			}
		})
	}
}

// TestSubscriptionOverSSE: where websockets are blocked, a subscription
// runs as Server-Sent Events (graphql-sse's distinct connections mode),
// behind the same guards: it gets the events, a refused token gets 401,
// and everything it held is freed when the client goes away.
func TestSubscriptionOverSSE(t *testing.T) {
	g := &auth.Guard{Mode: "jwt", Verifier: staticVerifier{"tok-ana": {Subject: "ana"}}}
	s, h := newServer(graphtest.New(), Config{}, 0, g)
	srv := httptest.NewServer(h)
	defer srv.Close()
	open := func(ctx context.Context, tok string) *http.Response {
		body := `{"query":"subscription { conversationUpdated(userId: \"ana\") { eventId userMessage } }"}`
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/graphql", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := open(t.Context(), "forged"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a forged token: %d; want 401", resp.StatusCode)
	}
	ctx, cancel := context.WithCancel(t.Context())
	resp := open(ctx, "tok-ana")
	defer resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
	waitUntil(t, "the SSE subscription is open", func() bool { return s.hub.Conversations.Len() == 1 })
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	s.hub.Conversations.Publish(&model.ConversationEvent{EventID: "e1", UserID: "ana", SessionID: "s1", UserMessage: "over SSE", AssistantReply: "r"})
	var got []string
	for l := range lines {
		got = append(got, l)
		if strings.Contains(l, "over SSE") {
			break
		}
	}
	if len(got) < 2 || got[len(got)-2] != "event: next" || !strings.HasPrefix(got[len(got)-1], "data: ") {
		t.Fatalf("stream %q; want an event next with the data", got)
	}
	cancel()
	waitUntil(t, "the SSE subscriber freed", func() bool { return s.hub.Conversations.Len() == 0 })
}
