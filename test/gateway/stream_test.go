package gateway

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

const chatStream = `subscription($id: ID!, $after: Int) { chatStream(instanceId: $id, after: $after) { instanceId seq delta text status done restarted toolCall { id name server arguments result status } } }`

// startTurn starts a chat turn of user with text through the first gateway
// and returns its instance and session ids.
func startTurn(t *testing.T, st *stack.Stack, user, text string) (id, session string) {
	t.Helper()
	d, errs, _ := gql(t, gqlURL(st, "gateway"), `mutation($u: ID!, $text: String!) { startChat(input: {userId: $u, text: $text}) { instanceId sessionId } }`,
		map[string]any{"u": user, "text": text})
	if errs != nil {
		t.Fatal(errs)
	}
	run := d["startChat"].(map[string]any)
	return run["instanceId"].(string), run["sessionId"].(string)
}

// streamed is what one chatStream subscriber received, until done.
type streamed struct {
	chunks []map[string]any
	text   string // the deltas joined
}

func (s streamed) last() map[string]any { return s.chunks[len(s.chunks)-1] }

// subscribed opens a websocket to the named gateway replica and starts
// subscription id of query on it.
func subscribed(t *testing.T, st *stack.Stack, replica, id, query string, vars map[string]any) *testkit.WSClient {
	t.Helper()
	ws := testkit.DialWS(t, gqlURL(st, replica), "graphql-transport-ws")
	ws.Init(nil)
	ws.Subscribe(id, query, vars)
	return ws
}

// follow reads chunks of subscription id until the done chunk, checking as
// it goes that seq grows and that text is always the deltas joined (after
// the chunks seen already: text so far, last seq).
func follow(t *testing.T, ws *testkit.WSClient, id string, seen ...map[string]any) streamed {
	t.Helper()
	s := streamed{chunks: seen}
	prev := 0
	for _, c := range seen {
		s.text += c["delta"].(string)
		prev = int(c["seq"].(float64))
	}
	for {
		c := ws.Data(id, 60*time.Second)["chatStream"].(map[string]any)
		seq := int(c["seq"].(float64))
		if seq <= prev {
			t.Fatalf("seq %d after %d: %v", seq, prev, s.chunks)
		}
		prev = seq
		if c["restarted"] == true {
			s.text = ""
		}
		s.text += c["delta"].(string)
		if c["text"] != s.text {
			t.Fatalf("chunk %d text %q; the deltas make %q", seq, c["text"], s.text)
		}
		s.chunks = append(s.chunks, c)
		if c["done"] == true {
			return s
		}
	}
}

// TestChatStreamEndToEnd: a turn started on one replica streams its reply
// on the other, word by word from the offline model through chat-service's
// pub/sub, in several chunks; the last one says COMPLETED and its text is
// the reply chatRun returns and history keeps. A subscriber that joins in
// the middle gets the text so far first, and one that resumes after a
// chunk gets only what follows.
func TestChatStreamEndToEnd(t *testing.T) {
	st := stacktest.Stack(t)
	id, session := startTurn(t, st, unique("streamer"), "please stream a reply to me")

	ws := subscribed(t, st, "gateway-2", "s", chatStream, map[string]any{"id": id})
	first := ws.Data("s", 60*time.Second)["chatStream"].(map[string]any)
	// Joining now, on the first replica: the text so far first.
	late := subscribed(t, st, "gateway", "l", chatStream, map[string]any{"id": id})
	resumed := subscribed(t, st, "gateway", "r", chatStream, map[string]any{"id": id, "after": 1})

	all := follow(t, ws, "s", first)
	end := all.last()
	if int(first["seq"].(float64)) != 1 || first["status"] != "RUNNING" || end["status"] != "COMPLETED" || end["instanceId"] != id {
		t.Fatalf("first %v, last %v", first, end)
	}
	if len(all.chunks) < 3 {
		t.Fatalf("the reply came in %d chunks; want it streamed in several: %v", len(all.chunks), all.chunks)
	}
	// The stream ends with the turn's conversation event, which the
	// workflow publishes just before it completes.
	var run map[string]any
	testkit.WaitFor(t, 10*time.Second, "chatRun COMPLETED", func() error {
		d, errs, _ := gql(t, gqlURL(st, "gateway-2"), `query($id: ID!) { chatRun(instanceId: $id) { status reply } }`, map[string]any{"id": id})
		if errs != nil {
			return fmt.Errorf("%v", errs)
		}
		if run = d["chatRun"].(map[string]any); run["status"] != "COMPLETED" {
			return fmt.Errorf("status %v", run["status"])
		}
		return nil
	})
	if run["reply"] != end["text"] || all.text != end["text"] || !strings.Contains(end["text"].(string), "please stream a reply to me") {
		t.Fatalf("streamed %q (last text %q); chatRun's reply %q", all.text, end["text"], run["reply"])
	}
	if l := follow(t, late, "l"); l.last()["text"] != end["text"] || int(l.chunks[0]["seq"].(float64)) != 1 {
		t.Fatalf("late subscriber: %v", l.chunks)
	}
	if r := follow(t, resumed, "r", first); int(r.chunks[1]["seq"].(float64)) != 2 || r.text != end["text"] {
		t.Fatalf("resumed after 1: %v", r.chunks)
	}
	testkit.WaitFor(t, 30*time.Second, "the streamed reply in the history", func() error {
		d, errs, _ := gql(t, gqlURL(st, "gateway"), `query($s: ID!) { conversation(sessionId: $s) { messages { role content } } }`, map[string]any{"s": session})
		if errs != nil {
			return fmt.Errorf("%v", errs)
		}
		msgs := d["conversation"].(map[string]any)["messages"].([]any)
		if len(msgs) != 2 || msgs[1].(map[string]any)["content"] != end["text"] {
			return fmt.Errorf("history %v", msgs)
		}
		return nil
	})
	// History paged backwards: the reply, then the message before it.
	page := func(before any) (msgs []any, hasPrevious bool) {
		d, errs, _ := gql(t, gqlURL(st, "gateway"), `query($s: ID!, $b: String) { conversation(sessionId: $s, last: 1, before: $b) { messages { content cursor } hasPrevious } }`,
			map[string]any{"s": session, "b": before})
		if errs != nil {
			t.Fatal(errs)
		}
		c := d["conversation"].(map[string]any)
		return c["messages"].([]any), c["hasPrevious"] == true
	}
	newest, more := page(nil)
	if len(newest) != 1 || newest[0].(map[string]any)["content"] != end["text"] || !more {
		t.Fatalf("newest page %v (hasPrevious %v)", newest, more)
	}
	older, more := page(newest[0].(map[string]any)["cursor"])
	if len(older) != 1 || older[0].(map[string]any)["content"] != "please stream a reply to me" || more {
		t.Fatalf("page before the reply %v (hasPrevious %v)", older, more)
	}
}

// TestChatStreamShowsTheToolCall: a question about the time streams the
// get_current_time call (name, arguments, result) before the answer that
// uses it.
func TestChatStreamShowsTheToolCall(t *testing.T) {
	st := stacktest.Stack(t)
	id, _ := startTurn(t, st, unique("timer"), "What time is it?")
	ws := subscribed(t, st, "gateway", "t", chatStream, map[string]any{"id": id})
	s := follow(t, ws, "t")
	var tool map[string]any
	for _, c := range s.chunks {
		if tc, ok := c["toolCall"].(map[string]any); ok {
			tool = tc
		}
	}
	if tool == nil || tool["name"] != "get_current_time" || tool["arguments"] != "{}" || tool["result"] == nil ||
		!strings.Contains(s.last()["text"].(string), tool["result"].(string)) {
		t.Fatalf("tool call %v in %v", tool, s.chunks)
	}
}

// TestChatStreamShowsMCPToolCalls: a turn that calls a tool of the MCP
// tool server streams the call as it happens — RUNNING with its server and
// arguments, then COMPLETED with its result — and the tools query lists
// what the agent can use.
func TestChatStreamShowsMCPToolCalls(t *testing.T) {
	st := stacktest.Stack(t)
	d, errs, _ := gql(t, gqlURL(st, "gateway"), `{ tools { name server description readOnly } }`, nil)
	if len(errs) != 0 {
		t.Fatalf("tools: %v", errs)
	}
	offered := map[string]bool{}
	for _, tl := range d["tools"].([]any) {
		m := tl.(map[string]any)
		offered[fmt.Sprint(m["name"], "@", m["server"], " ro=", m["readOnly"])] = true
	}
	for _, want := range []string{"get_current_time@<nil> ro=true", "tools_convert_units@tools ro=true", "tools_create_note@tools ro=false"} {
		if !offered[want] {
			t.Fatalf("tools %v lack %s", offered, want)
		}
	}
	id, _ := startTurn(t, st, unique("converter"), "convert 5 km to mi, please")
	ws := subscribed(t, st, "gateway", "m", chatStream, map[string]any{"id": id})
	s := follow(t, ws, "m")
	var states []string
	for _, c := range s.chunks {
		if tc, ok := c["toolCall"].(map[string]any); ok {
			if tc["name"] != "tools_convert_units" || tc["server"] != "tools" || tc["id"] == nil {
				t.Fatalf("tool call %v", tc)
			}
			states = append(states, fmt.Sprint(tc["status"]))
			if tc["status"] == "COMPLETED" && tc["result"] != "5 km = 3.106856 mi" {
				t.Fatalf("result %v", tc["result"])
			}
		}
	}
	if strings.Join(states, ",") != "RUNNING,COMPLETED" || !strings.Contains(s.last()["text"].(string), "3.106856 mi") {
		t.Fatalf("tool call states %v; reply %q", states, s.last()["text"])
	}
}

// TestCancelChat: a turn stopped while it runs ends TERMINATED for its
// stream subscriber, chatRun says so, a second cancel answers the same, and
// the stopped turn adds nothing to the history.
func TestCancelChat(t *testing.T) {
	st := stacktest.Stack(t)
	user := unique("stopper")
	id, session := startTurn(t, st, user, "a turn to stop")
	ws := subscribed(t, st, "gateway-2", "c", chatStream, map[string]any{"id": id})
	for range 2 {
		d, errs, _ := gql(t, gqlURL(st, "gateway"), `mutation($id: ID!) { cancelChat(instanceId: $id) { instanceId status } }`, map[string]any{"id": id})
		if errs != nil || d["cancelChat"].(map[string]any)["status"] != "TERMINATED" {
			t.Fatalf("cancelChat: %v %v", d, errs)
		}
	}
	if end := follow(t, ws, "c").last(); end["status"] != "TERMINATED" || end["done"] != true {
		t.Fatalf("the stream ended with %v", end)
	}
	d, _, _ := gql(t, gqlURL(st, "gateway-2"), `query($id: ID!) { chatRun(instanceId: $id) { status } }`, map[string]any{"id": id})
	if d["chatRun"].(map[string]any)["status"] != "TERMINATED" {
		t.Fatalf("chatRun after cancel: %v", d)
	}
	// A later turn on the same session is remembered; the stopped one not.
	if _, errs, _ := gql(t, gqlURL(st, "gateway"), sendMessage, map[string]any{"in": map[string]any{"userId": user, "text": "after the stop", "sessionId": session}}); errs != nil {
		t.Fatal(errs)
	}
	testkit.WaitFor(t, 30*time.Second, "the next turn in the history, the stopped one not", func() error {
		d, _, _ := gql(t, gqlURL(st, "gateway"), `query($s: ID!) { conversation(sessionId: $s) { messages { content } } }`, map[string]any{"s": session})
		msgs := fmt.Sprint(d["conversation"])
		if !strings.Contains(msgs, "after the stop") || strings.Contains(msgs, "a turn to stop") {
			return fmt.Errorf("history %s", msgs)
		}
		return nil
	})
}

// TestConversationUpdatedResumesOnAnotherReplica: a client that saw the
// first turn's event and went away comes back on the other replica with
// that event's cursor: the two turns it missed come first, in order and
// once, then the next turn live.
func TestConversationUpdatedResumesOnAnotherReplica(t *testing.T) {
	st := stacktest.Stack(t)
	user, session := unique("resumer"), unique("resume-s")
	const q = `subscription($s: ID, $after: String) { conversationUpdated(sessionId: $s, after: $after) { eventId userMessage cursor } }`
	turn := func(text string) {
		t.Helper()
		if _, errs, _ := gql(t, gqlURL(st, "gateway"), sendMessage, map[string]any{"in": map[string]any{"userId": user, "text": text, "sessionId": session}}); errs != nil {
			t.Fatal(errs)
		}
	}
	event := func(ws *testkit.WSClient, id string) map[string]any {
		t.Helper()
		return ws.Data(id, 30*time.Second)["conversationUpdated"].(map[string]any)
	}
	first := subscribed(t, st, "gateway", "1", q, map[string]any{"s": session})
	waitSubscribers(t, st, "gateway", "conversations", 1)
	turn("turn one")
	seen := event(first, "1")
	if seen["userMessage"] != "turn one" || seen["cursor"] == "" {
		t.Fatalf("first event %v", seen)
	}
	first.Close()
	turn("turn two")
	turn("turn three")

	again := subscribed(t, st, "gateway-2", "2", q, map[string]any{"s": session, "after": seen["cursor"]})
	var got []string
	for range 2 {
		got = append(got, event(again, "2")["userMessage"].(string))
	}
	turn("turn four")
	got = append(got, event(again, "2")["userMessage"].(string))
	if strings.Join(got, ", ") != "turn two, turn three, turn four" {
		t.Fatalf("after resuming: %v", got)
	}
}
