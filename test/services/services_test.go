// Package services tests the chat service and the agent memory service end
// to end through real daprd sidecars, Redis, placement and scheduler, with
// the offline model (the secret store holds an empty gemini-api-key).
package services

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

var listener *stacktest.Listener

func TestMain(m *testing.M) {
	var err error
	listener, err = stacktest.NewListener("e2e-listener", "conversations", "memory-updates")
	if err != nil {
		panic(err)
	}
	code := stacktest.Run(m, stacktest.Options{Apps: []stack.App{
		stack.Memory.App(),
		stack.Tools.App(),
		// replies at once: many turns (streaming is tested in test/gateway);
		// tools listed again after a second (TestToolsChangeWhileRunning);
		// notes kept without an approval (approvals: test/gateway); a tool
		// call stopped after 2 s (TestToolsChangeWhileRunning)
		stack.Chat.App("LLM_OFFLINE_TOKEN_DELAY=0", "TOOLS_REFRESH=1s", "TOOLS_AUTO_APPROVE=tools/create_note,extra/*", "TOOL_TIMEOUT=2s"),
		listener.App(),
		{ID: intruderApp}, // a sidecar of another app (TestOnlyChatServiceDrivesItsWorkflow)
	}})
	listener.Close()
	os.Exit(code)
}

// through the sidecars, as the tutorial's clients and the gateway do
func chatURL(st *stack.Stack, path string) string {
	return st.App("chat-service").SidecarURL() + "/v1.0/invoke/chat-service/method/" + path
}

func memoryURL(st *stack.Stack, path string) string {
	return st.App("agent-memory-service").SidecarURL() + "/v1.0/invoke/agent-memory-service/method/" + path
}

func token(st *stack.Stack) []string { return []string{"dapr-api-token", st.APIToken} }

func history(t *testing.T, st *stack.Stack, session string) []map[string]any {
	t.Helper()
	r := stacktest.Do(t, http.MethodGet, memoryURL(st, "conversations/"+session), nil, token(st)...)
	if r.Status != http.StatusOK {
		t.Fatalf("history: %d %s", r.Status, r.Body)
	}
	var h struct {
		History []map[string]any `json:"history"`
	}
	json.Unmarshal(r.Body, &h)
	return h.History
}

func waitHistory(t *testing.T, st *stack.Stack, session string, n int) []map[string]any {
	t.Helper()
	var h []map[string]any
	testkit.WaitFor(t, 60*time.Second, fmt.Sprintf("%d history entries in %s", n, session), func() error {
		h = history(t, st, session)
		if len(h) != n {
			return fmt.Errorf("%d entries", len(h))
		}
		return nil
	})
	return h
}

// waitSessions waits until the user's session list has n sessions, each
// with message_count messages (the list is written after the history).
func waitSessions(t *testing.T, st *stack.Stack, user string, n, messages int) []any {
	t.Helper()
	var list []any
	testkit.WaitFor(t, 30*time.Second, fmt.Sprintf("%d sessions of %s with %d messages", n, user, messages), func() error {
		r := stacktest.Do(t, http.MethodGet, memoryURL(st, "users/"+user+"/sessions"), nil, token(st)...)
		list, _ = r.JSON["sessions"].([]any)
		if len(list) != n {
			return fmt.Errorf("%s", r.Body)
		}
		for _, x := range list {
			if c := x.(map[string]any)["message_count"]; c != float64(messages) {
				return fmt.Errorf("%s", r.Body)
			}
		}
		return nil
	})
	return list
}

func unique(prefix string) string { return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()) }

var utcTime = regexp.MustCompile(`\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC`)

func TestChatTurnEndToEnd(t *testing.T) {
	st := stacktest.Stack(t)
	user, session := unique("junaid"), unique("session")
	r := stacktest.Do(t, http.MethodPost, memoryURL(st, "memories/"+user+"/initialize"),
		map[string]string{"name": "Junaid", "preferred_style": "formal", "user_summary": "Junaid is learning Dapr."}, token(st)...)
	if r.Status != http.StatusOK || r.JSON["status"] != "success" {
		t.Fatalf("initialize: %d %s", r.Status, r.Body)
	}

	before := time.Now().UTC()
	r = stacktest.Do(t, http.MethodPost, chatURL(st, "chat/"),
		map[string]any{"user_id": user, "text": "What time is it?", "metadata": map[string]string{"session_id": session}, "tags": []string{"e2e"}}, token(st)...)
	if r.Status != http.StatusOK {
		t.Fatalf("chat: %d %s", r.Status, r.Body)
	}
	reply, _ := r.JSON["reply"].(string)
	ts := utcTime.FindString(reply)
	if ts == "" {
		t.Fatalf("reply %q has no UTC time: the get_current_time tool did not run", reply)
	}
	got, _ := time.Parse("2006-01-02 15:04:05 UTC", ts)
	if got.Before(before.Add(-2*time.Second)) || got.After(time.Now().UTC().Add(2*time.Second)) {
		t.Fatalf("reply time %s is not the current time (%s)", ts, before)
	}
	if r.JSON["status"] != "COMPLETED" || r.JSON["user_id"] != user || !strings.HasPrefix(r.JSON["instance_id"].(string), "chat-") {
		t.Fatalf("chat response = %s", r.Body)
	}
	md, _ := r.JSON["metadata"].(map[string]any)
	if md["session_id"] != session {
		t.Fatalf("metadata = %v", md)
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(md["timestamp"])); err != nil {
		t.Fatalf("timestamp %v is not RFC 3339", md["timestamp"])
	}

	h := waitHistory(t, st, session, 2)
	if h[0]["role"] != "user" || h[0]["content"] != "What time is it?" || h[1]["role"] != "assistant" || h[1]["content"] != reply {
		t.Fatalf("history = %v", h)
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(h[0]["timestamp"])); err != nil {
		t.Fatalf("history timestamp %v is not RFC 3339", h[0]["timestamp"])
	}
	// The summary follows once the user's turns pause (SUMMARY_DEBOUNCE),
	// announced by MemoryUpdated.
	evs, err := listener.Await(30*time.Second, 1, "memory-updates", user, session)
	if err != nil {
		t.Fatal(err)
	}
	r = stacktest.Do(t, http.MethodGet, memoryURL(st, "memories/"+user), nil, token(st)...)
	summary, _ := r.JSON["user_summary"].(string)
	if summary == "Junaid is learning Dapr." || !strings.Contains(summary, "What time is it?") {
		t.Fatalf("user_summary not regenerated: %q", summary)
	}
	if r.JSON["name"] != "Junaid" || r.JSON["preferred_style"] != "formal" {
		t.Fatalf("profile lost its fields: %s", r.Body)
	}
	var mu map[string]string
	json.Unmarshal(evs[0].Data, &mu)
	if mu["user_summary"] != summary {
		t.Fatalf("MemoryUpdated = %v; want summary %q", mu, summary)
	}

	// The second turn sees the first one, the name, the style and the summary.
	r = stacktest.Do(t, http.MethodPost, chatURL(st, "chat"),
		map[string]any{"user_id": user, "text": "Tell me more", "metadata": map[string]string{"session_id": session}}, token(st)...)
	if r.Status != http.StatusOK {
		t.Fatalf("second chat: %d %s", r.Status, r.Body)
	}
	reply2, _ := r.JSON["reply"].(string)
	for _, want := range []string{"Junaid", "formal", summary, "2 earlier message(s)", reply} {
		if !strings.Contains(reply2, want) {
			t.Errorf("second reply %q does not show %q reached the prompt", reply2, want)
		}
	}
	waitHistory(t, st, session, 4)
	if list := waitSessions(t, st, user, 1, 4); list[0].(map[string]any)["session_id"] != session {
		t.Fatalf("sessions of %s = %v", user, list)
	}
}

func TestNewSessionWhenNoneGiven(t *testing.T) {
	st := stacktest.Stack(t)
	r := stacktest.Do(t, http.MethodPost, chatURL(st, "chat"), map[string]any{"user_id": unique("anon"), "text": "hello"}, token(st)...)
	md, _ := r.JSON["metadata"].(map[string]any)
	if r.Status != http.StatusOK || md["session_id"] == "" || md["session_id"] == nil {
		t.Fatalf("chat without session: %d %s", r.Status, r.Body)
	}
}

func TestUnknownUserGetsDefaults(t *testing.T) {
	st := stacktest.Stack(t)
	user := unique("stranger")
	r := stacktest.Do(t, http.MethodGet, memoryURL(st, "memories/"+user), nil, token(st)...)
	want := map[string]any{"name": user, "preferred_style": "casual", "user_summary": user + " is a new user."}
	if r.Status != http.StatusOK || fmt.Sprint(r.JSON) != fmt.Sprint(want) {
		t.Fatalf("unknown user: %d %s", r.Status, r.Body)
	}
}

func publish(t *testing.T, st *stack.Stack, data any, eventID string) {
	t.Helper()
	u := listenerSidecar(st) + "/v1.0/publish/pubsub/conversations"
	if eventID != "" {
		u += "?metadata.cloudevent.id=" + url.QueryEscape(eventID)
	}
	r := stacktest.Do(t, http.MethodPost, u, data, token(st)...)
	if r.Status != http.StatusNoContent {
		t.Fatalf("publish: %d %s", r.Status, r.Body)
	}
}

func listenerSidecar(st *stack.Stack) string { return st.App("e2e-listener").SidecarURL() }

func event(user, session, msg string) map[string]string {
	return map[string]string{"user_id": user, "session_id": session, "event_type": "ConversationUpdated",
		"user_message": msg, "assistant_reply": "reply to " + msg}
}

func TestConcurrentEventsLoseNothing(t *testing.T) {
	st := stacktest.Stack(t)
	user, session := unique("busy"), unique("crowded")
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			publish(t, st, event(user, session, fmt.Sprintf("message %d", i)), "")
		}()
	}
	wg.Wait()
	h := waitHistory(t, st, session, 100)
	seen := map[string]bool{}
	for _, e := range h {
		seen[fmt.Sprint(e["content"])] = true
	}
	for i := range 50 {
		if m := fmt.Sprintf("message %d", i); !seen[m] || !seen["reply to "+m] {
			t.Fatalf("entry %q or its reply missing", m)
		}
	}
}

func TestRedeliveredEventAppliedOnce(t *testing.T) {
	st := stacktest.Stack(t)
	user, session := unique("twice"), unique("dup")
	id := unique("event")
	publish(t, st, event(user, session, "only once"), id)
	publish(t, st, event(user, session, "only once"), id)
	waitHistory(t, st, session, 2)
	// The second delivery is recognised as a duplicate (the memory log says so).
	logFile := st.App("agent-memory-service").AppCmd.Spec.LogFile
	testkit.WaitFor(t, 30*time.Second, "duplicate logged", func() error {
		b, _ := os.ReadFile(logFile)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "duplicate conversation event ignored") && strings.Contains(line, id) {
				return nil
			}
		}
		return fmt.Errorf("no duplicate line for %s", id)
	})
	if h := history(t, st, session); len(h) != 2 {
		t.Fatalf("history after a redelivery has %d entries; want 2", len(h))
	}
}

func TestIdempotencyKey(t *testing.T) {
	st := stacktest.Stack(t)
	user, session := unique("idem"), unique("idem-session")
	body := map[string]any{"user_id": user, "text": "count me once", "metadata": map[string]string{"session_id": session}}
	key := unique("key")
	h := append(token(st), "Idempotency-Key", key)
	r1 := stacktest.Do(t, http.MethodPost, chatURL(st, "chat"), body, h...)
	r2 := stacktest.Do(t, http.MethodPost, chatURL(st, "chat"), body, h...)
	if r1.Status != http.StatusOK || r2.Status != http.StatusOK {
		t.Fatalf("chat: %d %s / %d %s", r1.Status, r1.Body, r2.Status, r2.Body)
	}
	if r1.JSON["instance_id"] != r2.JSON["instance_id"] || r1.JSON["reply"] != r2.JSON["reply"] {
		t.Fatalf("retried request ran again: %s vs %s", r1.Body, r2.Body)
	}
	waitHistory(t, st, session, 2)
	if _, err := listener.Await(30*time.Second, 1, "conversations", session); err != nil {
		t.Fatal(err)
	}
	if n := len(listener.Matching("conversations", session)); n != 1 {
		t.Fatalf("%d ConversationUpdated events for one idempotent turn; want 1", n)
	}
	// Another key is another turn.
	r3 := stacktest.Do(t, http.MethodPost, chatURL(st, "chat"), body, append(token(st), "Idempotency-Key", key+"-2")...)
	if r3.JSON["instance_id"] == r1.JSON["instance_id"] {
		t.Fatal("a different key reused the turn")
	}
}

func TestAsyncChat(t *testing.T) {
	st := stacktest.Stack(t)
	r := stacktest.Do(t, http.MethodPost, chatURL(st, "chat/async"), map[string]any{"user_id": unique("async"), "text": "hi there"}, token(st)...)
	if r.Status != http.StatusAccepted || r.JSON["instance_id"] == nil || r.JSON["session_id"] == nil {
		t.Fatalf("async: %d %s", r.Status, r.Body)
	}
	id := r.JSON["instance_id"].(string)
	testkit.WaitFor(t, 60*time.Second, "turn completed", func() error {
		r = stacktest.Do(t, http.MethodGet, chatURL(st, "chat/"+id), nil, token(st)...)
		if r.JSON["status"] != "COMPLETED" {
			return fmt.Errorf("status %v", r.JSON["status"])
		}
		return nil
	})
	if reply, _ := r.JSON["reply"].(string); !strings.Contains(reply, "hi there") {
		t.Fatalf("run = %s", r.Body)
	}
	r = stacktest.Do(t, http.MethodGet, chatURL(st, "chat/chat-does-not-exist"), nil, token(st)...)
	if r.Status != http.StatusNotFound {
		t.Fatalf("unknown run: %d %s", r.Status, r.Body)
	}
}

func TestForgetUserAndDeleteConversation(t *testing.T) {
	st := stacktest.Stack(t)
	user, s1, s2 := unique("forget"), unique("s1"), unique("s2")
	publish(t, st, event(user, s1, "one"), "")
	publish(t, st, event(user, s2, "two"), "")
	waitHistory(t, st, s1, 2)
	waitHistory(t, st, s2, 2)
	waitSessions(t, st, user, 2, 2)
	if r := stacktest.Do(t, http.MethodDelete, memoryURL(st, "conversations/"+s1), nil, token(st)...); r.Status != http.StatusOK {
		t.Fatalf("delete conversation: %d %s", r.Status, r.Body)
	}
	if r := stacktest.Do(t, http.MethodDelete, memoryURL(st, "conversations/"+s1), nil, token(st)...); r.Status != http.StatusNotFound {
		t.Fatalf("delete twice: %d %s", r.Status, r.Body)
	}
	if h := history(t, st, s1); len(h) != 0 {
		t.Fatalf("deleted history = %v", h)
	}
	if r := stacktest.Do(t, http.MethodDelete, memoryURL(st, "memories/"+user), nil, token(st)...); r.Status != http.StatusOK || r.JSON["sessions_deleted"] != float64(1) {
		t.Fatalf("forget: %d %s", r.Status, r.Body)
	}
	if h := history(t, st, s2); len(h) != 0 {
		t.Fatalf("history of a forgotten user = %v", h)
	}
	r := stacktest.Do(t, http.MethodGet, memoryURL(st, "users/"+user+"/sessions"), nil, token(st)...)
	if list, _ := r.JSON["sessions"].([]any); len(list) != 0 {
		t.Fatalf("sessions after forget = %s", r.Body)
	}
	r = stacktest.Do(t, http.MethodGet, memoryURL(st, "memories/"+user), nil, token(st)...)
	if r.JSON["user_summary"] != user+" is a new user." {
		t.Fatalf("profile after forget = %s", r.Body)
	}
}

func TestBadInput(t *testing.T) {
	st := stacktest.Stack(t)
	big := strings.Repeat("x", 17<<10)
	huge := `{"user_id":"u","text":"` + strings.Repeat("y", 1<<20+10) + `"}`
	tests := []struct {
		name, method, url string
		body              any
		status            int
		detail            string
	}{
		{"empty text", "POST", chatURL(st, "chat"), map[string]any{"user_id": "u1", "text": ""}, 400, "Message text cannot be empty"},
		{"blank text", "POST", chatURL(st, "chat/"), map[string]any{"user_id": "u1", "text": "  \n\t"}, 400, "Message text cannot be empty"},
		{"text over 16 KiB", "POST", chatURL(st, "chat"), map[string]any{"user_id": "u1", "text": big}, 413, "longer than"},
		{"state-key injection in user_id", "POST", chatURL(st, "chat"), map[string]any{"user_id": "a||b", "text": "hi"}, 400, "user_id must match"},
		{"bad session_id", "POST", chatURL(st, "chat"), map[string]any{"user_id": "u1", "text": "hi", "metadata": map[string]string{"session_id": "../etc"}}, 400, "session_id must match"},
		{"missing user_id", "POST", chatURL(st, "chat/async"), map[string]any{"text": "hi"}, 400, "user_id must match"},
		{"malformed JSON", "POST", chatURL(st, "chat"), `{"user_id": "u1", "text": `, 400, "malformed JSON"},
		{"wrong type", "POST", chatURL(st, "chat"), `{"user_id": 5, "text": "hi"}`, 400, "malformed JSON"},
		{"body over 1 MiB", "POST", chatURL(st, "chat"), huge, 413, "larger than"},
		{"memory: injection in path", "GET", memoryURL(st, "memories/"+url.PathEscape("a||b")), nil, 400, "user_id must match"},
		{"memory: malformed initialize", "POST", memoryURL(st, "memories/u1/initialize"), `{"name":`, 400, "malformed JSON"},
		{"memory: session injection", "GET", memoryURL(st, "conversations/"+url.PathEscape("x||y")), nil, 400, "session_id must match"},
		{"memory: bad last", "GET", memoryURL(st, "conversations/s?last=-1"), nil, 400, "last must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := stacktest.Do(t, tt.method, tt.url, tt.body, token(st)...)
			if r.Status != tt.status {
				t.Fatalf("status %d %s; want %d", r.Status, r.Body, tt.status)
			}
			if d, _ := r.JSON["detail"].(string); !strings.Contains(d, tt.detail) {
				t.Fatalf("detail %q; want it to contain %q", d, tt.detail)
			}
		})
	}
}

func TestForeignAndMalformedEventsDropped(t *testing.T) {
	st := stacktest.Stack(t)
	session := unique("foreign")
	publish(t, st, map[string]string{"user_id": "u", "session_id": session, "event_type": "SomethingElse", "user_message": "a", "assistant_reply": "b"}, "")
	publish(t, st, map[string]string{"user_id": "a||b", "session_id": session, "event_type": "ConversationUpdated", "user_message": "a", "assistant_reply": "b"}, "")
	logFile := st.App("agent-memory-service").AppCmd.Spec.LogFile
	testkit.WaitFor(t, 30*time.Second, "both drops logged", func() error {
		b, _ := os.ReadFile(logFile)
		s := string(b)
		if strings.Contains(s, `foreign event type \"SomethingElse\"`) && strings.Contains(s, "invalid user_id or session_id") {
			return nil
		}
		return fmt.Errorf("drops not logged yet")
	})
	if h := history(t, st, session); len(h) != 0 {
		t.Fatalf("a dropped event was applied: %v", h)
	}
}

func TestHealthAndWelcome(t *testing.T) {
	st := stacktest.Stack(t)
	for _, app := range []string{"chat-service", "agent-memory-service"} {
		r := stacktest.Do(t, http.MethodGet, st.App(app).AppURL()+"/health", nil)
		if r.Status != 200 || r.JSON["status"] != "ok" || r.JSON["dapr"] != "ok" || r.JSON["llm"] != "offline" {
			t.Fatalf("%s /health = %d %s", app, r.Status, r.Body)
		}
		r = stacktest.Do(t, http.MethodGet, st.App(app).AppURL()+"/", nil)
		if msg, _ := r.JSON["message"].(string); !strings.HasPrefix(msg, "Welcome to the DACA") {
			t.Fatalf("%s / = %s", app, r.Body)
		}
	}
}

// Runs after the tests above have produced traffic: /metrics of both
// services shows requests per route, chat turns, LLM calls and tokens, and
// pub/sub events by status.
func TestZMetrics(t *testing.T) {
	st := stacktest.Stack(t)
	chatM := string(stacktest.Do(t, http.MethodGet, st.App("chat-service").AppURL()+"/metrics", nil).Body)
	memM := string(stacktest.Do(t, http.MethodGet, st.App("agent-memory-service").AppURL()+"/metrics", nil).Body)
	for _, c := range []struct{ name, body, want string }{
		{"chat", chatM, `daca_http_requests_total{method="POST",route="/chat",status="200"}`},
		{"chat", chatM, `daca_http_requests_total{method="POST",route="/chat",status="400"}`},
		{"chat", chatM, `daca_http_request_duration_seconds_count{method="POST",route="/chat/async"}`},
		{"chat", chatM, `daca_chat_turns_total{outcome="completed"}`},
		{"chat", chatM, `daca_llm_call_duration_seconds_count{mode="offline",outcome="ok"}`},
		{"chat", chatM, `daca_llm_tokens_total{kind="completion",mode="offline"}`},
		{"memory", memM, `daca_pubsub_events_total{status="SUCCESS",topic="conversations"}`},
		{"memory", memM, `daca_pubsub_events_total{status="DROP",topic="conversations"}`},
		{"memory", memM, `daca_http_requests_total{method="GET",route="/memories/{user_id}",status="200"}`},
		{"memory", memM, `daca_llm_tokens_total{kind="prompt",mode="offline"}`},
	} {
		if !strings.Contains(c.body, c.want) {
			t.Errorf("%s /metrics lacks %s", c.name, c.want)
		}
	}
}

// TestChatAnswersAreNotRetried: the chat-service retry policy
// (chatTransportRetry) repeats transport failures only. An answer of the
// app reaches the caller once and whole through the sidecar's HTTP API,
// its detail included however long — no retry of a refused (or failed)
// turn.
func TestChatAnswersAreNotRetried(t *testing.T) {
	st := stacktest.Stack(t)
	metric := regexp.MustCompile(`daca_http_requests_total\{method="POST",route="/chat",status="400"\} (\d+)`)
	count := func() int {
		m := metric.FindStringSubmatch(string(stacktest.Do(t, http.MethodGet, st.App(contract.ChatApp).AppURL()+"/metrics", nil).Body))
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	before := count()
	long := strings.Repeat("k", contract.MaxIdempotencyKey+1)
	r := stacktest.Do(t, http.MethodPost, chatURL(st, "chat"), map[string]any{"user_id": "ana", "text": "hi"},
		append(token(st), contract.IdempotencyHeader, long)...)
	want := "Idempotency-Key must be 1 to 255 printable characters"
	if r.Status != http.StatusBadRequest || r.JSON["detail"] != want {
		t.Fatalf("%d %s; want 400 with the detail %q", r.Status, r.Body, want)
	}
	if got := count() - before; got != 1 {
		t.Fatalf("chat-service answered POST /chat with 400 %d times for one request; want 1 (no retry of an answer)", got)
	}
}

// TestEventOfAnotherUsersSessionDropped is the memory's own lock: an event
// whose user does not own the session (published by anyone, bypassing
// chat-service's check) is dropped, logged and counted, and the session's
// history and owner stay as they were.
func TestEventOfAnotherUsersSessionDropped(t *testing.T) {
	st := stacktest.Stack(t)
	session, alice := unique("owned"), unique("alice")
	r := stacktest.Do(t, http.MethodPost, chatURL(st, "chat"), map[string]any{"user_id": alice, "text": "hello", "metadata": map[string]string{"session_id": session}}, token(st)...)
	if r.Status != http.StatusOK {
		t.Fatalf("alice's turn: %d %s", r.Status, r.Body)
	}
	testkit.WaitFor(t, 30*time.Second, "alice's turn in the history", func() error {
		if h := history(t, st, session); len(h) != 2 {
			return fmt.Errorf("%d entries", len(h))
		}
		return nil
	})
	publish(t, st, map[string]string{"user_id": "mallory", "session_id": session, "event_type": "ConversationUpdated",
		"user_message": "injected", "assistant_reply": "injected"}, unique("ev"))
	testkit.WaitFor(t, 30*time.Second, "the foreign event counted as dropped", func() error {
		m := string(stacktest.Do(t, http.MethodGet, st.App(contract.MemoryApp).AppURL()+"/metrics", nil).Body)
		if !regexp.MustCompile(`daca_memory_foreign_session_events_total [1-9]`).MatchString(m) {
			return errors.New("not counted yet")
		}
		return nil
	})
	if h := history(t, st, session); len(h) != 2 {
		t.Fatalf("history has %d entries after a foreign event; want alice's 2", len(h))
	}
	r = stacktest.Do(t, http.MethodGet, memoryURL(st, "owners/"+session), nil, token(st)...)
	if r.JSON["user_id"] != alice {
		t.Fatalf("owner %s; want %s", r.Body, alice)
	}
}
