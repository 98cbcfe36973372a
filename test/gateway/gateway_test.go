// Package gateway tests the GraphQL gateway end to end: two gateway replicas
// with their own sidecars, chat-service and agent-memory-service on a real
// stack; queries and mutations over HTTP, subscriptions over both websocket
// protocols, and bad input of every kind.
package gateway

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	neturl "net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

func TestMain(m *testing.M) {
	// A burst of 20 chat turns per user (the default is 10): the session
	// order tests send 20 messages at once.
	ws := []string{"WS_INIT_TIMEOUT=2s", "WS_KEEPALIVE=1s", "RATE_LIMIT_BURST=20"}
	os.Exit(stacktest.Run(m, stacktest.Options{Apps: []stack.App{
		stack.Memory.App(),
		stack.Tools.App(),
		// a slow model, so a turn is seen RUNNING; a tool call that nobody
		// decides on expires soon (approval_test.go)
		stack.Chat.App("LLM_OFFLINE_DELAY=700ms", "APPROVAL_TIMEOUT=15s"),
		stack.Gateway.App(ws...),
		stack.Gateway.Named("gateway-2", ws...),
		stack.Gateway.Named("gateway-jwt", "AUTH_MODE=jwt", "WS_INIT_TIMEOUT=2s", "JWT_ISSUER="+jwtIssuer, "JWT_AUDIENCE="+jwtAudience, "RATE_LIMIT_BURST=20"),
	}, Secrets: map[string]string{contract.SecretLLMKey: "", contract.SecretJWT: jwtSecret}}))
}

const (
	jwtSecret   = "e2e-signing-secret-0123456789abcdef"
	jwtIssuer   = "daca-e2e-issuer"
	jwtAudience = "daca-gateway"
)

func gqlURL(st *stack.Stack, name string) string { return st.App(name).AppURL() + "/graphql" }

func unique(p string) string { return fmt.Sprintf("%s-%d", p, time.Now().UnixNano()) }

// waitSubscribers waits until a gateway has n open subscriptions on topic.
func waitSubscribers(t *testing.T, st *stack.Stack, name, topic string, n int) {
	t.Helper()
	re := regexp.MustCompile(`daca_gateway_open_subscriptions\{topic="` + topic + `"\} (\d+)`)
	testkit.WaitFor(t, 10*time.Second, fmt.Sprintf("%d %s subscribers on %s", n, topic, name), func() error {
		r := stacktest.Do(t, http.MethodGet, st.App(name).AppURL()+"/metrics", nil)
		m := re.FindSubmatch(r.Body)
		if m == nil {
			return fmt.Errorf("no metric")
		}
		if got, _ := strconv.Atoi(string(m[1])); got < n {
			return fmt.Errorf("%d", got)
		}
		return nil
	})
}

var utcTime = regexp.MustCompile(`\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC`)

const sendMessage = `mutation($in: SendMessageInput!) { sendMessage(input: $in) { userId sessionId reply instanceId status timestamp } }`

func TestQueriesAndMutations(t *testing.T) {
	st := stacktest.Stack(t)
	url := gqlURL(st, "gateway")
	user, session := unique("ana"), unique("gs")
	d, errs, _ := gql(t, url, `mutation($u: ID!) { initializeMemory(userId: $u, input: {name: "Ana", preferredStyle: "formal"}) { userId name preferredStyle userSummary } }`, map[string]any{"u": user})
	if errs != nil || d["initializeMemory"].(map[string]any)["preferredStyle"] != "formal" {
		t.Fatalf("initializeMemory: %v %v", d, errs)
	}
	d, errs, _ = gql(t, url, sendMessage, map[string]any{"in": map[string]any{"userId": user, "text": "What time is it?", "sessionId": session}})
	if errs != nil {
		t.Fatalf("sendMessage: %v", errs)
	}
	rep := d["sendMessage"].(map[string]any)
	if !utcTime.MatchString(rep["reply"].(string)) || rep["status"] != "COMPLETED" || rep["sessionId"] != session {
		t.Fatalf("sendMessage = %v", rep)
	}
	if _, err := time.Parse(time.RFC3339, rep["timestamp"].(string)); err != nil {
		t.Fatalf("timestamp %v", rep["timestamp"])
	}
	testkit.WaitFor(t, 30*time.Second, "conversation of 2 messages, listed in the sessions", func() error {
		d, errs, _ = gql(t, url, `query($s: ID!, $u: ID!) { conversation(sessionId: $s, last: 10) { messages { role content timestamp } } sessions(userId: $u) { sessionId messageCount lastMessage { role } } memory(userId: $u) { name userSummary } }`,
			map[string]any{"s": session, "u": user})
		if errs != nil {
			return fmt.Errorf("%v", errs)
		}
		if n := len(d["conversation"].(map[string]any)["messages"].([]any)); n != 2 {
			return fmt.Errorf("%d messages", n)
		}
		// The session list is written after the history.
		if s := d["sessions"].([]any); len(s) != 1 || s[0].(map[string]any)["messageCount"] != float64(2) {
			return fmt.Errorf("sessions = %v", s)
		}
		return nil
	})
	msgs := d["conversation"].(map[string]any)["messages"].([]any)
	if msgs[0].(map[string]any)["role"] != "USER" || msgs[1].(map[string]any)["role"] != "ASSISTANT" {
		t.Fatalf("messages = %v", msgs)
	}
	if s := d["sessions"].([]any); len(s) != 1 || s[0].(map[string]any)["messageCount"] != float64(2) {
		t.Fatalf("sessions = %v", s)
	}
	// Session.messages of several sessions, batched into one bulk read of
	// the state store through the memory service.
	session2 := unique("gs")
	if _, errs, _ := gql(t, url, sendMessage, map[string]any{"in": map[string]any{"userId": user, "text": "second", "sessionId": session2}}); errs != nil {
		t.Fatalf("sendMessage 2: %v", errs)
	}
	testkit.WaitFor(t, 30*time.Second, "both sessions with their messages", func() error {
		d, errs, _ = gql(t, url, `query($u: ID!) { sessions(userId: $u) { sessionId messages { role content } first: messages(last: 1) { role } } }`, map[string]any{"u": user})
		if errs != nil {
			return fmt.Errorf("%v", errs)
		}
		got := map[string]string{}
		for _, x := range d["sessions"].([]any) {
			s := x.(map[string]any)
			m := s["messages"].([]any)
			if len(m) != 2 || len(s["first"].([]any)) != 1 {
				return fmt.Errorf("session %v: %d messages", s["sessionId"], len(m))
			}
			got[s["sessionId"].(string)] = m[0].(map[string]any)["content"].(string)
		}
		if got[session] != "What time is it?" || got[session2] != "second" {
			return fmt.Errorf("first messages %v", got)
		}
		return nil
	})
	// Idempotency through the gateway.
	in := map[string]any{"userId": user, "text": "once", "sessionId": session, "idempotencyKey": unique("k")}
	d1, _, _ := gql(t, url, sendMessage, map[string]any{"in": in})
	d2, _, _ := gql(t, url, sendMessage, map[string]any{"in": in})
	if d1["sendMessage"].(map[string]any)["instanceId"] != d2["sendMessage"].(map[string]any)["instanceId"] {
		t.Fatalf("idempotency key not honoured: %v vs %v", d1, d2)
	}
	// Health and delete.
	d, _, _ = gql(t, url, `{ health { status sidecar llm authMode backends { appId status } } }`, nil)
	h := d["health"].(map[string]any)
	if h["status"] != "ok" || h["llm"] != "offline" || h["authMode"] != "none" {
		t.Fatalf("health = %v", h)
	}
	d, _, _ = gql(t, url, `mutation($s: ID!) { deleteConversation(sessionId: $s) }`, map[string]any{"s": session})
	if d["deleteConversation"] != true {
		t.Fatalf("deleteConversation = %v", d)
	}
	d, _, _ = gql(t, url, `mutation($u: ID!) { forgetUser(userId: $u) { userId sessionsDeleted } }`, map[string]any{"u": user})
	if d["forgetUser"] == nil {
		t.Fatalf("forgetUser = %v", d)
	}
	if d, _, _ = gql(t, url, `{ chatRun(instanceId: "chat-unknown") { status } }`, nil); d["chatRun"] != nil {
		t.Fatalf("unknown chatRun = %v", d)
	}
}

func TestSubscriptionsBothProtocolsAndReplicas(t *testing.T) {
	st := stacktest.Stack(t)
	user, session := unique("sub"), unique("live")
	q := `subscription($s: ID) { conversationUpdated(sessionId: $s) { eventId userId sessionId userMessage assistantReply } }`
	modern := testkit.DialWS(t, gqlURL(st, "gateway"), "graphql-transport-ws")
	modern.Init(nil)
	modern.Subscribe("1", q, map[string]any{"s": session})
	modern.Subscribe("2", `subscription($u: ID!) { memoryUpdated(userId: $u) { userId sessionId userSummary } }`, map[string]any{"u": user})
	legacy := testkit.DialWS(t, gqlURL(st, "gateway"), "graphql-ws")
	legacy.Init(nil)
	legacy.Subscribe("a", q, map[string]any{"s": session})
	replica := testkit.DialWS(t, gqlURL(st, "gateway-2"), "graphql-transport-ws")
	replica.Init(nil)
	replica.Subscribe("r", q, map[string]any{"s": session})
	waitSubscribers(t, st, "gateway", "conversations", 2)
	waitSubscribers(t, st, "gateway", "memory-updates", 1)
	waitSubscribers(t, st, "gateway-2", "conversations", 1)

	_, errs, _ := gql(t, gqlURL(st, "gateway-2"), sendMessage, map[string]any{"in": map[string]any{"userId": user, "text": "live hello", "sessionId": session}})
	if errs != nil {
		t.Fatal(errs)
	}
	for _, c := range []struct {
		name string
		ws   *testkit.WSClient
		id   string
	}{{"graphql-transport-ws", modern, "1"}, {"legacy graphql-ws", legacy, "a"}, {"second replica", replica, "r"}} {
		d := c.ws.Data(c.id, 30*time.Second)
		ev := d["conversationUpdated"].(map[string]any)
		if ev["sessionId"] != session || ev["userMessage"] != "live hello" || !strings.Contains(ev["assistantReply"].(string), "live hello") {
			t.Fatalf("%s got %v", c.name, ev)
		}
	}
	d := modern.Data("2", 30*time.Second)
	if ev := d["memoryUpdated"].(map[string]any); ev["userId"] != user || !strings.Contains(ev["userSummary"].(string), "live hello") {
		t.Fatalf("memoryUpdated = %v", ev)
	}
	// Complete frees the subscription.
	modern.Send(map[string]any{"id": "1", "type": "complete"})
	legacy.Send(map[string]any{"id": "a", "type": "stop"})
	testkit.WaitFor(t, 10*time.Second, "subscriptions freed", func() error {
		r := stacktest.Do(t, http.MethodGet, st.App("gateway").AppURL()+"/metrics", nil)
		if !strings.Contains(string(r.Body), `daca_gateway_open_subscriptions{topic="conversations"} 0`) {
			return fmt.Errorf("still open")
		}
		return nil
	})
}

// TestPubSubRunsOnTheChosenBroker: the broadcast above ran on the broker
// the run asked for (make test runs this package on Redis and on RabbitMQ):
// each gateway sidecar loaded both pub/sub components of that broker.
func TestPubSubRunsOnTheChosenBroker(t *testing.T) {
	st := stacktest.Stack(t)
	want := "pubsub." + stacktest.Broker()
	components := func(name string) map[string]string {
		t.Helper()
		r := stacktest.Do(t, http.MethodGet, st.App(name).SidecarURL()+"/v1.0/metadata", nil, "dapr-api-token", st.APIToken)
		var md struct {
			Components []struct{ Name, Type string } `json:"components"`
		}
		if err := json.Unmarshal(r.Body, &md); err != nil {
			t.Fatalf("%s metadata: %v: %s", name, err, r.Body)
		}
		got := map[string]string{}
		for _, c := range md.Components {
			got[c.Name] = c.Type
		}
		return got
	}
	if got := components(contract.ChatApp); got[contract.PubSub] != want || got[contract.StreamPubSub] != want {
		t.Fatalf("chat-service sidecar components %v; want %s and %s of type %s", got, contract.PubSub, contract.StreamPubSub, want)
	}
	for _, name := range []string{"gateway", "gateway-2"} {
		got := components(name)
		if got[contract.PubSub] != want || got[contract.GatewayPubSub] != want {
			t.Fatalf("%s sidecar components %v; want %s and %s of type %s", name, got, contract.PubSub, contract.GatewayPubSub, want)
		}
	}
}

func TestStartChatAndFollowIt(t *testing.T) {
	st := stacktest.Stack(t)
	d, errs, _ := gql(t, gqlURL(st, "gateway"), `mutation { startChat(input: {userId: "runner", text: "follow me"}) { instanceId status sessionId } }`, nil)
	if errs != nil {
		t.Fatal(errs)
	}
	id := d["startChat"].(map[string]any)["instanceId"].(string)
	ws := testkit.DialWS(t, gqlURL(st, "gateway"), "graphql-transport-ws")
	ws.Init(nil)
	ws.Subscribe("run", `subscription($id: ID!) { chatRun(instanceId: $id) { instanceId status stage reply } }`, map[string]any{"id": id})
	var statuses []string
	for {
		m := ws.Next(60*time.Second, "next", "complete", "error")
		if m["type"] == "complete" {
			break
		}
		if m["type"] == "error" {
			t.Fatalf("error: %v", m)
		}
		run := m["payload"].(map[string]any)["data"].(map[string]any)["chatRun"].(map[string]any)
		statuses = append(statuses, run["status"].(string))
		if run["status"] == "COMPLETED" && !strings.Contains(fmt.Sprint(run["reply"]), "follow me") {
			t.Fatalf("reply = %v", run["reply"])
		}
	}
	joined := strings.Join(statuses, ",")
	if !strings.Contains(joined, "RUNNING") || !strings.HasSuffix(joined, "COMPLETED") {
		t.Fatalf("statuses %s; want RUNNING then COMPLETED", joined)
	}
}

func TestBadInputKeepsServing(t *testing.T) {
	st := stacktest.Stack(t)
	url := gqlURL(st, "gateway")
	deep := strings.Repeat("{ a ", 10000) + strings.Repeat("}", 10000)
	var aliases strings.Builder
	aliases.WriteString("{")
	for i := range 1000 {
		fmt.Fprintf(&aliases, " a%d: health { status }", i)
	}
	aliases.WriteString(" }")
	post := func(ct, body string, headers ...string) (int, string) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", ct)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := bufio.NewReader(resp.Body).Peek(2000)
		return resp.StatusCode, string(b)
	}
	js := "application/json"
	tests := []struct {
		name, ct, body string
		wantStatus     int
		wantText       string
	}{
		{"malformed JSON", js, `{"query": `, 400, "not a JSON object with a query"},
		{"batched operations", js, `[{"query": "{ health { status } }"}, {"query": "{ health { status } }"}]`, 400, "batched operations"},
		{"unknown field", js, `{"query": "{ nope }"}`, 422, "GRAPHQL_VALIDATION_FAILED"},
		{"wrong variable type", js, `{"query": "query($n: Int) { conversation(sessionId: \"s\", last: $n) { sessionId } }", "variables": {"n": "x"}}`, 422, "GRAPHQL_VALIDATION_FAILED"},
		{"10,000-deep query", js, mustJSON(deep), 0, "errors"},
		{"1,000 aliases", js, mustJSON(aliases.String()), 0, "COMPLEXITY_LIMIT_EXCEEDED"},
		{"bad id", js, `{"query": "{ memory(userId: \"a||b\") { name } }"}`, 200, "BAD_USER_INPUT"},
		{"10 MiB body", js, `{"query": "` + strings.Repeat("x", 10<<20) + `"}`, 413, "larger than the limit"},
		{"CSRF: text/plain", "text/plain", `{"query": "mutation { forgetUser(userId: \"x\") { userId } }"}`, 400, "preflight"},
		{"CSRF: form", "application/x-www-form-urlencoded", `query=mutation{forgetUser(userId:"x"){userId}}`, 400, "preflight"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := post(tt.ct, tt.body)
			if status == 200 && tt.wantStatus != 200 && tt.wantStatus != 0 {
				t.Fatalf("status 200 %s", body)
			}
			if tt.wantStatus != 0 && status != tt.wantStatus {
				t.Fatalf("status %d %s; want %d", status, body, tt.wantStatus)
			}
			if status == 200 && !strings.Contains(body, `"errors"`) {
				t.Fatalf("no error for bad input: %s", body)
			}
			if !strings.Contains(strings.ToLower(body), strings.ToLower(tt.wantText)) {
				t.Fatalf("body %.300s; want %q", body, tt.wantText)
			}
		})
	}
	// Mutations never run over GET: 405 with Allow: POST, and no effect.
	getUser := unique("get-user")
	mut := fmt.Sprintf(`mutation { initializeMemory(userId: %q, input: {name: "set over GET"}) { name } }`, getUser)
	r := stacktest.Do(t, http.MethodGet, url+"?query="+neturl.QueryEscape(mut), nil)
	if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") != http.MethodPost {
		t.Fatalf("mutation over GET: %d (Allow %q) %s; want 405, Allow: POST", r.Status, r.Header.Get("Allow"), r.Body)
	}
	data, _, _ := gql(t, url, `query($u: ID!) { memory(userId: $u) { name } }`, map[string]any{"u": getUser})
	if name := data["memory"].(map[string]any)["name"]; name == "set over GET" {
		t.Fatal("the mutation sent over GET ran")
	}
	// Websocket protocol errors close with the protocol's codes.
	ws := testkit.DialWS(t, url, "graphql-transport-ws")
	ws.Subscribe("x", `subscription { memoryUpdated(userId: "u") { userId } }`, nil)
	if c := ws.Closed(10 * time.Second); c != 4401 {
		t.Fatalf("subscribe before connection_init: close %d; want 4401", c)
	}
	ws = testkit.DialWS(t, url, "graphql-transport-ws")
	ws.Init(nil)
	ws.Subscribe("dup", `subscription { memoryUpdated(userId: "u") { userId } }`, nil)
	ws.Subscribe("dup", `subscription { memoryUpdated(userId: "u") { userId } }`, nil)
	if c := ws.Closed(10 * time.Second); c != 4409 {
		t.Fatalf("duplicate id: close %d; want 4409", c)
	}
	ws = testkit.DialWS(t, url, "graphql-transport-ws")
	ws.SendRaw("garbage{{{")
	if c := ws.Closed(10 * time.Second); c != 4400 {
		t.Fatalf("garbage frame: close %d; want 4400", c)
	}
	ws = testkit.DialWS(t, url, "graphql-transport-ws")
	if c := ws.Closed(10 * time.Second); c != 4408 {
		t.Fatalf("no connection_init: close %d; want 4408", c)
	}
	// Still serving.
	if d, errs, _ := gql(t, url, `{ health { gateway } }`, nil); errs != nil || d["health"] == nil {
		t.Fatalf("gateway stopped serving: %v %v", d, errs)
	}
	_ = websocket.StatusNormalClosure
}

func mustJSON(q string) string {
	b := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(q)
	return `{"query": "` + b + `"}`
}

func token(t *testing.T, sub, role string) string {
	t.Helper()
	c := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix(), "iss": jwtIssuer, "aud": jwtAudience}
	if role != "" {
		c["role"] = role
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func gqlAs(t *testing.T, url, tok, query string) ([]any, int) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(mustJSON(query)))
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Errors []any `json:"errors"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	return out.Errors, resp.StatusCode
}

func TestJWTMode(t *testing.T) {
	st := stacktest.Stack(t)
	url := gqlURL(st, "gateway-jwt")
	ana, admin := token(t, "ana", ""), token(t, "root", "admin")
	tests := []struct {
		name, tok, query string
		code             string
		status           int
	}{
		{"anonymous", "", `{ memory(userId: "ana") { name } }`, "UNAUTHENTICATED", 200},
		{"own memory", ana, `{ memory(userId: "ana") { name } }`, "", 200},
		{"another user's memory", ana, `{ memory(userId: "bo") { name } }`, "FORBIDDEN", 200},
		{"another user's sessions", ana, `{ sessions(userId: "bo") { sessionId } }`, "FORBIDDEN", 200},
		{"chat as another user", ana, `mutation { sendMessage(input: {userId: "bo", text: "hi"}) { reply } }`, "FORBIDDEN", 200},
		{"admin", admin, `{ memory(userId: "bo") { name } }`, "", 200},
		{"forged token", "forged.token.value", `{ health { status } }`, "UNAUTHENTICATED", 401},
		{"health says jwt", "", `{ health { authMode } }`, "", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs, status := gqlAs(t, url, tt.tok, tt.query)
			if code(errs) != tt.code || status != tt.status {
				t.Fatalf("code %q status %d (%v); want %q %d", code(errs), status, errs, tt.code, tt.status)
			}
		})
	}
	ws := testkit.DialWS(t, url, "graphql-transport-ws")
	ws.Send(map[string]any{"type": "connection_init", "payload": map[string]any{"Authorization": "Bearer forged"}})
	if c := ws.Closed(10 * time.Second); c != 4403 {
		t.Fatalf("bad token on connection_init: close %d; want 4403", c)
	}
	ws = testkit.DialWS(t, url, "graphql-transport-ws")
	ws.Init(map[string]any{"Authorization": "Bearer " + ana})
	ws.Subscribe("m", `subscription { memoryUpdated(userId: "ana") { userId } }`, nil)
	waitSubscribers(t, st, "gateway-jwt", "memory-updates", 1)
}

func TestThousandSubscribersGetOneEvent(t *testing.T) {
	st := stacktest.Stack(t)
	session := unique("crowd")
	const conns, perConn = 50, 20
	var clients []*testkit.WSClient
	for range conns {
		c := testkit.DialWS(t, gqlURL(st, "gateway"), "graphql-transport-ws")
		c.Init(nil)
		for j := range perConn {
			c.Subscribe(strconv.Itoa(j), `subscription($s: ID) { conversationUpdated(sessionId: $s) { eventId userMessage } }`, map[string]any{"s": session})
		}
		clients = append(clients, c)
	}
	waitSubscribers(t, st, "gateway", "conversations", conns*perConn)
	if _, errs, _ := gql(t, gqlURL(st, "gateway"), sendMessage, map[string]any{"in": map[string]any{"userId": "crowd", "text": "to all", "sessionId": session}}); errs != nil {
		t.Fatal(errs)
	}
	got := 0
	for _, c := range clients {
		seen := map[string]bool{}
		for range perConn {
			m := c.Next(30*time.Second, "next")
			id := fmt.Sprint(m["id"])
			if seen[id] || !strings.Contains(fmt.Sprint(m["payload"]), "to all") {
				t.Fatalf("bad delivery %v", m)
			}
			seen[id] = true
			got++
		}
	}
	if got != conns*perConn {
		t.Fatalf("%d of %d subscribers got the event", got, conns*perConn)
	}
}

// TestStopClosesWebsockets: a gateway that is told to stop (SIGTERM) closes
// its websockets with 1001 and a reason before it exits, so clients
// reconnect at once.
func TestStopClosesWebsockets(t *testing.T) {
	st := stacktest.Stack(t)
	ws := testkit.DialWS(t, gqlURL(st, "gateway-2"), "graphql-transport-ws")
	ws.Init(nil)
	ws.Subscribe("1", `subscription($u: ID!) { memoryUpdated(userId: $u) { userSummary } }`, map[string]any{"u": unique("bye")})
	waitSubscribers(t, st, "gateway-2", "memory-updates", 1)
	app := st.App("gateway-2")
	stopped := make(chan struct{})
	go func() { app.AppCmd.Stop(20 * time.Second); close(stopped) }()
	t.Cleanup(func() {
		<-stopped
		if err := st.Restart(context.Background(), "gateway-2"); err != nil {
			t.Errorf("restarting gateway-2: %v", err)
		}
	})
	if code := ws.Closed(15 * time.Second); code != websocket.StatusGoingAway {
		t.Fatalf("closed with %d (%v); want 1001 Going Away", code, ws.Err())
	}
	var ce websocket.CloseError
	if !errors.As(ws.Err(), &ce) || !strings.Contains(ce.Reason, "shutting down") {
		t.Fatalf("close reason %q; want it to say the gateway is shutting down", ce.Reason)
	}
	select {
	case <-stopped:
	case <-time.After(15 * time.Second):
		t.Fatal("the gateway did not exit after closing its websockets")
	}
}

// The per-user limit of chat turns (burst 20 here, 30 a minute) holds
// across replicas: turns sent alternately through two gateways are counted
// once.
func TestTurnLimitIsSharedByReplicas(t *testing.T) {
	st := stacktest.Stack(t)
	user := unique("limited")
	start := time.Now()
	allowed, refused := 0, 0
	for i := range 30 {
		gw := []string{"gateway", "gateway-2"}[i%2]
		_, errs, _ := gql(t, gqlURL(st, gw), `mutation($u: ID!) { startChat(input: {userId: $u, text: "hello"}) { instanceId } }`, map[string]any{"u": user})
		switch code(errs) {
		case "":
			allowed++
		case "RATE_LIMITED":
			refused++
			ext := errs[0].(map[string]any)["extensions"].(map[string]any)
			if ra, _ := ext["retryAfter"].(float64); ra < 1 {
				t.Fatalf("RATE_LIMITED without a retryAfter: %v", ext)
			}
		default:
			t.Fatalf("turn %d via %s: %v", i, gw, errs)
		}
	}
	// Each replica alone would have let all 30 through (15 each, burst 20).
	refill := int(time.Since(start) / (2 * time.Second)) // 30 a minute
	if allowed > 20+refill || refused == 0 {
		t.Fatalf("%d turns allowed, %d refused in %s; want at most %d allowed across both replicas", allowed, refused, time.Since(start), 20+refill)
	}
	// AG-UI's runs count against the same limit: refused before any event,
	// 429 with Retry-After (a second try in case a token was refilled).
	agui := func() stacktest.Response {
		return stacktest.Do(t, http.MethodPost, st.App("gateway-2").AppURL()+"/agui", map[string]any{
			"threadId": "", "runId": unique("run"), "forwardedProps": map[string]any{"userId": user},
			"messages": []any{map[string]any{"id": unique("m"), "role": "user", "content": "hello over AG-UI"}},
		})
	}
	r := agui()
	if r.Status != http.StatusTooManyRequests {
		r = agui()
	}
	if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" || !strings.Contains(string(r.Body), `"code":"rate_limited"`) {
		t.Fatalf("AG-UI over the limit: %d %v %s; want 429 rate_limited with Retry-After", r.Status, r.Header, r.Body)
	}
	// Counted by the shared store, not by a replica's fallback.
	for _, gw := range []string{"gateway", "gateway-2"} {
		r := stacktest.Do(t, http.MethodGet, st.App(gw).AppURL()+"/metrics", nil)
		if !strings.Contains(string(r.Body), "daca_gateway_turn_limit_fallbacks_total 0\n") {
			t.Fatalf("%s fell back to its own limit (or has no fallback counter)", gw)
		}
	}
	// The count lives in the gateway's state store (Dapr prefixes the key
	// with the app id) and expires once the allowance is full again.
	ttl, err := st.RedisDo("TTL", "gateway||turns|"+user)
	if n, ok := ttl.(int64); err != nil || !ok || n < 1 || n > 45 {
		t.Fatalf("TTL of the limit's key: %v, %v; want 1..45 s (a burst of 20 at 30 a minute)", ttl, err)
	}
}

// TestSessionBelongsToItsStarter is the hole of issue 12, tried as a user:
// bob sends a turn on alice's session. With AUTH_MODE=jwt he is refused
// (FORBIDDEN) before any workflow starts; with AUTH_MODE=none chat-service
// refuses it (BAD_USER_INPUT). Either way alice's history stays hers: no
// entry of bob's, the session never moves to bob's list, and bob cannot
// read, delete or follow it.
func TestSessionBelongsToItsStarter(t *testing.T) {
	st := stacktest.Stack(t)
	jwtURL, noneURL := gqlURL(st, "gateway-jwt"), gqlURL(st, "gateway")
	alice, bob := unique("alice"), unique("bob")
	aliceTok, bobTok := token(t, alice, ""), token(t, bob, "")
	session := unique("s-alice")
	send := func(url, tok, user, text string) ([]any, map[string]any) {
		errs, _ := gqlAs(t, url, tok, fmt.Sprintf(`mutation { sendMessage(input: {userId: %q, text: %q, sessionId: %q}) { reply sessionId } }`, user, text, session))
		return errs, nil
	}
	if errs, _ := send(jwtURL, aliceTok, alice, "my secret is 42"); len(errs) != 0 {
		t.Fatalf("alice's turn: %v", errs)
	}
	history := func() int {
		data, errs, _ := gql(t, noneURL, `query($s: ID!) { conversation(sessionId: $s) { messages { content } } }`, map[string]any{"s": session})
		if len(errs) != 0 {
			t.Fatalf("conversation: %v", errs)
		}
		msgs, _ := data["conversation"].(map[string]any)["messages"].([]any)
		return len(msgs)
	}
	testkit.WaitUntil(t, 30*time.Second, "alice's turn in her history", func() bool { return history() == 2 })

	errs, _ := send(jwtURL, bobTok, bob, "what is alice's secret?")
	if code(errs) != "FORBIDDEN" {
		t.Fatalf("jwt: bob's turn on alice's session: %v; want FORBIDDEN", errs)
	}
	errs, _ = send(noneURL, "", bob, "what is alice's secret?")
	if code(errs) != "BAD_USER_INPUT" || !strings.Contains(fmt.Sprint(errs), "belongs to another user") {
		t.Fatalf("none: bob's turn on alice's session: %v; want BAD_USER_INPUT saying so", errs)
	}
	for _, q := range []string{
		fmt.Sprintf(`{ conversation(sessionId: %q) { sessionId } }`, session),
		fmt.Sprintf(`mutation { deleteConversation(sessionId: %q) }`, session),
		`{ conversation(sessionId: "no-such-session") { sessionId } }`, // unknown looks the same
	} {
		if errs, _ := gqlAs(t, jwtURL, bobTok, q); code(errs) != "FORBIDDEN" {
			t.Fatalf("bob: %s: %v; want FORBIDDEN", q, errs)
		}
	}
	if errs, _ := gqlAs(t, jwtURL, aliceTok, fmt.Sprintf(`{ conversation(sessionId: %q) { sessionId } }`, session)); len(errs) != 0 {
		t.Fatalf("alice reads her session: %v", errs)
	}
	if n := history(); n != 2 {
		t.Fatalf("alice's session has %d entries after bob's attempts; want her 2", n)
	}
	data, _, _ := gql(t, noneURL, `query($u: ID!) { sessions(userId: $u) { sessionId } }`, map[string]any{"u": bob})
	if list, _ := data["sessions"].([]any); len(list) != 0 {
		t.Fatalf("bob's sessions %v; want none (alice's never moves to him)", list)
	}
}

// TestPersistedQueriesAcrossReplicas: a query one replica was sent with its
// hash (Apollo's automatic persisted queries) is known to the other by the
// hash alone, over GET (what a CDN caches); an unknown hash gets
// PERSISTED_QUERY_NOT_FOUND, as Apollo Client expects, and no data.
func TestPersistedQueriesAcrossReplicas(t *testing.T) {
	st := stacktest.Stack(t)
	query := fmt.Sprintf(`{ memory(userId: %q) { name } }`, unique("apq"))
	sum := sha256.Sum256([]byte(query))
	hash := hex.EncodeToString(sum[:])
	ext := map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": hash}}
	r := stacktest.Do(t, http.MethodPost, gqlURL(st, "gateway"), map[string]any{"query": query, "extensions": ext})
	if r.Status != http.StatusOK || r.JSON["errors"] != nil {
		t.Fatalf("register on gateway: %d %s", r.Status, r.Body)
	}
	extJSON, _ := json.Marshal(ext)
	get := func(name string, e []byte) stacktest.Response {
		return stacktest.Do(t, http.MethodGet, gqlURL(st, name)+"?extensions="+neturl.QueryEscape(string(e)), nil)
	}
	if r := get("gateway-2", extJSON); r.Status != http.StatusOK || r.JSON["errors"] != nil || r.JSON["data"] == nil {
		t.Fatalf("the hash alone on gateway-2: %d %s", r.Status, r.Body)
	}
	unknown, _ := json.Marshal(map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": strings.Repeat("0", 64)}})
	r = get("gateway-2", unknown)
	if code(r.JSON["errors"].([]any)) != "PERSISTED_QUERY_NOT_FOUND" || !strings.Contains(string(r.Body), "PersistedQueryNotFound") || r.JSON["data"] != nil {
		t.Fatalf("an unknown hash: %d %s", r.Status, r.Body)
	}
}
