package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// caller is who calls in the authorization matrix.
type caller struct {
	name string
	// token for the owner of the data (its subject, or someone else's).
	token func(t *testing.T, owner string) string
	// class is what the gateway must make of the caller: own, other,
	// admin, none (no token) or bad (a token it must refuse).
	class string
}

func signed(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claimsOf(sub string) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix(), "iss": jwtIssuer, "aud": jwtAudience}
}

func with(c jwt.MapClaims, k string, v any) jwt.MapClaims { c[k] = v; return c }

var callers = []caller{
	{"own data", func(t *testing.T, owner string) string { return token(t, owner, "") }, "own"},
	{"another user's", func(t *testing.T, owner string) string { return token(t, unique("mallory"), "") }, "other"},
	{"admin", func(t *testing.T, owner string) string { return token(t, unique("root"), "admin") }, "admin"},
	{"no token", func(*testing.T, string) string { return "" }, "none"},
	{"expired", func(t *testing.T, owner string) string {
		return signed(t, jwt.SigningMethodHS256, []byte(jwtSecret), with(claimsOf(owner), "exp", time.Now().Add(-time.Hour).Unix()))
	}, "bad"},
	{"wrong issuer", func(t *testing.T, owner string) string {
		return signed(t, jwt.SigningMethodHS256, []byte(jwtSecret), with(claimsOf(owner), "iss", "someone-else"))
	}, "bad"},
	{"wrong audience", func(t *testing.T, owner string) string {
		return signed(t, jwt.SigningMethodHS256, []byte(jwtSecret), with(claimsOf(owner), "aud", "another-api"))
	}, "bad"},
	{"alg none", func(t *testing.T, owner string) string {
		return signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claimsOf(owner))
	}, "bad"},
	{"wrong secret", func(t *testing.T, owner string) string {
		return signed(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdef012345"), claimsOf(owner))
	}, "bad"},
}

// data is one user's: a session with a completed turn (and, for the rows
// that decide one, a tool call of theirs that waits for approval).
type data struct{ user, session, instance, approval string }

// newData makes a user with one completed turn, through the JWT gateway.
func newData(t *testing.T, url, prefix string) data {
	t.Helper()
	d := data{user: unique(prefix), session: unique(prefix + "-s")}
	d2, errs, _ := gqlWith(t, url, token(t, d.user, ""), sendMessage, map[string]any{"in": map[string]any{"userId": d.user, "text": "hello", "sessionId": d.session}})
	if len(errs) != 0 {
		t.Fatalf("%s's turn: %v", d.user, errs)
	}
	d.instance = fmt.Sprint(d2["sendMessage"].(map[string]any)["instanceId"])
	return d
}

// TestAuthorizationMatrix: every query, mutation and subscription of the
// API, against the real stack with AUTH_MODE=jwt (JWT_ISSUER and
// JWT_AUDIENCE set), for every kind of caller. Unknown and foreign data
// look the same; a refused token is refused before any resolver runs (HTTP
// 401, websocket 4403), and a refused mutation changes nothing.
func TestAuthorizationMatrix(t *testing.T) {
	st := stacktest.Stack(t)
	url := gqlURL(st, "gateway-jwt")
	alice := newData(t, url, "alice")
	type expect struct{ own, other, admin string } // "" ok; else the code (or "null": data null, no error)
	ops := []struct {
		name string
		// query against d (fresh data per row for the destructive ones)
		query       func(d data) string
		destructive bool
		want        expect
	}{
		{"memory", func(d data) string { return fmt.Sprintf(`{ memory(userId: %q) { name } }`, d.user) }, false, expect{"", "FORBIDDEN", ""}},
		{"sessions", func(d data) string { return fmt.Sprintf(`{ sessions(userId: %q) { sessionId } }`, d.user) }, false, expect{"", "FORBIDDEN", ""}},
		{"conversation", func(d data) string { return fmt.Sprintf(`{ conversation(sessionId: %q) { sessionId } }`, d.session) }, false, expect{"", "FORBIDDEN", ""}},
		{"chatRun", func(d data) string { return fmt.Sprintf(`{ chatRun(instanceId: %q) { status } }`, d.instance) }, false, expect{"", "null", ""}},
		{"health", func(data) string { return `{ health { status } }` }, false, expect{"", "", ""}},
		{"tools", func(data) string { return `{ tools { name } }` }, false, expect{"", "", ""}},
		{"sendMessage", func(d data) string {
			return fmt.Sprintf(`mutation { sendMessage(input: {userId: %q, text: "hi", sessionId: %q}) { reply } }`, d.user, d.session)
		}, false, expect{"", "FORBIDDEN", ""}},
		{"startChat", func(d data) string {
			return fmt.Sprintf(`mutation { startChat(input: {userId: %q, text: "hi", sessionId: %q}) { instanceId } }`, d.user, d.session)
		}, false, expect{"", "FORBIDDEN", ""}},
		{"initializeMemory", func(d data) string {
			return fmt.Sprintf(`mutation { initializeMemory(userId: %q, input: {name: "Changed"}) { name } }`, d.user)
		}, true, expect{"", "FORBIDDEN", ""}},
		{"deleteConversation", func(d data) string { return fmt.Sprintf(`mutation { deleteConversation(sessionId: %q) }`, d.session) }, true, expect{"", "FORBIDDEN", ""}},
		{"cancelChat", func(d data) string {
			return fmt.Sprintf(`mutation { cancelChat(instanceId: %q) { status } }`, d.instance)
		}, false, expect{"", "NOT_FOUND", ""}},
		{"forgetUser", func(d data) string {
			return fmt.Sprintf(`mutation { forgetUser(userId: %q) { sessionsDeleted } }`, d.user)
		}, true, expect{"", "FORBIDDEN", ""}},
		{"pendingApprovals", func(d data) string { return fmt.Sprintf(`{ pendingApprovals(userId: %q) { id } }`, d.user) }, false, expect{"", "FORBIDDEN", ""}},
		{"usage", func(d data) string { return fmt.Sprintf(`{ usage(userId: %q) { tokensIn turns } }`, d.user) }, false, expect{"", "FORBIDDEN", ""}},
		{"decideToolCall", func(d data) string {
			return fmt.Sprintf(`mutation { decideToolCall(approvalId: %q, approve: false, reason: "matrix") { status } }`, d.approval)
		}, true, expect{"", "NOT_FOUND", ""}},
	}
	for _, op := range ops {
		for _, c := range callers {
			t.Run(op.name+"/"+c.name, func(t *testing.T) {
				d := alice
				if op.destructive && (c.class == "own" || c.class == "admin") {
					d = newData(t, url, "victim") // data this row may change
				}
				if op.name == "decideToolCall" {
					d.approval = "chat-none-r1-t1" // refused before any resolver runs
					if c.class == "own" || c.class == "other" || c.class == "admin" {
						d.approval = waitingApproval(t, url, d.user)
					}
				}
				out, errs, status := gqlWith(t, url, c.token(t, d.user), op.query(d), nil)
				want := ""
				switch c.class {
				case "own":
					want = op.want.own
				case "other":
					want = op.want.other
				case "admin":
					want = op.want.admin
				case "none":
					want = "UNAUTHENTICATED"
				case "bad":
					want = "UNAUTHENTICATED"
					if status != http.StatusUnauthorized {
						t.Fatalf("status %d; want 401 before any resolver runs", status)
					}
				}
				if op.name == "health" && c.class == "none" {
					want = "" // health is open
				}
				switch {
				case want == "null":
					if len(errs) != 0 || out[strings.Split(op.name, "/")[0]] != nil {
						t.Fatalf("data %v errors %v; want null and no error (as for an unknown turn)", out, errs)
					}
				case code(errs) != want:
					t.Fatalf("code %q (%v); want %q", code(errs), errs, want)
				}
				if op.name == "decideToolCall" && c.class == "other" { // the refusal changed nothing
					p, _, _ := gqlWith(t, url, token(t, d.user, ""), fmt.Sprintf(`{ pendingApprovals(userId: %q) { id } }`, d.user), nil)
					if !strings.Contains(fmt.Sprint(p), d.approval) {
						t.Fatalf("after another user's decision %s is no longer pending: %v", d.approval, p)
					}
				}
			})
		}
	}
	// Nothing a refused caller tried changed alice's data.
	got, errs, _ := gqlWith(t, url, token(t, alice.user, ""), `query($s: ID!, $u: ID!) { conversation(sessionId: $s) { messages { content } } memory(userId: $u) { name } }`,
		map[string]any{"s": alice.session, "u": alice.user})
	msgs, _ := got["conversation"].(map[string]any)["messages"].([]any)
	if len(errs) != 0 || got["memory"].(map[string]any)["name"] == "Changed" {
		t.Fatalf("alice's data after the refused calls: %v %v", got, errs)
	}
	testkit.WaitUntil(t, 30*time.Second, "alice's history holds only her own turns", func() bool {
		got, _, _ = gqlWith(t, url, token(t, alice.user, ""), `query($s: ID!) { conversation(sessionId: $s) { messages { content } } }`, map[string]any{"s": alice.session})
		msgs, _ = got["conversation"].(map[string]any)["messages"].([]any)
		return len(msgs)%2 == 0 && len(msgs) >= 2
	})

	// Subscriptions: a refused token closes the socket with 4403; another
	// user's turn looks like an unknown one.
	subs := []struct {
		name, query string
		want        expect // "" accepted; else the error code
	}{
		{"memoryUpdated", fmt.Sprintf(`subscription { memoryUpdated(userId: %q) { userId } }`, alice.user), expect{"", "FORBIDDEN", ""}},
		{"conversationUpdated", fmt.Sprintf(`subscription { conversationUpdated(userId: %q) { eventId } }`, alice.user), expect{"", "FORBIDDEN", ""}},
		// A session answered as the conversation query answers it (once
		// accepted, then silent forever for another user).
		{"conversationUpdated of a session", fmt.Sprintf(`subscription { conversationUpdated(sessionId: %q) { eventId } }`, alice.session), expect{"", "FORBIDDEN", ""}},
		{"conversationUpdated of an unknown session", `subscription { conversationUpdated(sessionId: "s-unknown") { eventId } }`, expect{"FORBIDDEN", "FORBIDDEN", ""}},
		{"chatRun", fmt.Sprintf(`subscription { chatRun(instanceId: %q) { status } }`, alice.instance), expect{"", "NOT_FOUND", ""}},
		{"chatRun of an unknown turn", `subscription { chatRun(instanceId: "chat-unknown") { status } }`, expect{"NOT_FOUND", "NOT_FOUND", "NOT_FOUND"}},
		{"chatStream", fmt.Sprintf(`subscription { chatStream(instanceId: %q) { done text } }`, alice.instance), expect{"", "NOT_FOUND", ""}},
		{"chatStream of an unknown turn", `subscription { chatStream(instanceId: "chat-unknown") { done } }`, expect{"NOT_FOUND", "NOT_FOUND", "NOT_FOUND"}},
		{"approvalRequested", fmt.Sprintf(`subscription { approvalRequested(userId: %q) { id } }`, alice.user), expect{"", "FORBIDDEN", ""}},
	}
	for _, s := range subs {
		for _, c := range callers {
			t.Run("subscription "+s.name+"/"+c.name, func(t *testing.T) {
				ws := testkit.DialWS(t, url, "graphql-transport-ws")
				ws.Send(map[string]any{"type": "connection_init", "payload": map[string]any{"Authorization": "Bearer " + c.token(t, alice.user)}})
				if c.class == "none" || c.class == "bad" {
					if got := ws.Closed(10 * time.Second); got != 4403 {
						t.Fatalf("closed with %d; want 4403", got)
					}
					return
				}
				ws.Next(10*time.Second, "connection_ack")
				ws.Subscribe("1", s.query, nil)
				want := map[string]string{"own": s.want.own, "other": s.want.other, "admin": s.want.admin}[c.class]
				if want == "" {
					if strings.HasPrefix(s.name, "chat") { // a finished turn: its final state at once
						if m := ws.Next(10*time.Second, "next", "error"); m["type"] != "next" {
							t.Fatalf("got %v; want the turn's state", m)
						}
					}
					return // accepted (memoryUpdated, conversationUpdated wait for events)
				}
				// gqlgen reports a subscription's resolver error as a result
				// with errors and no data (graphql-ws allows either form).
				m := ws.Next(10*time.Second, "error", "next")
				p, _ := m["payload"].(map[string]any)
				isErr := m["type"] == "error" || (p["data"] == nil && p["errors"] != nil)
				if !isErr || !strings.Contains(fmt.Sprint(m["payload"]), "code:"+want) {
					t.Fatalf("got %v; want an error %s", m, want)
				}
			})
		}
	}
}

// waitingApproval starts a turn of user's whose tool call waits for
// approval (a note), through the JWT gateway, and returns the request's id.
func waitingApproval(t *testing.T, url, user string) string {
	t.Helper()
	tok := token(t, user, "")
	if _, errs, _ := gqlWith(t, url, tok, `mutation($u: ID!) { startChat(input: {userId: $u, text: "remind me to sign the matrix"}) { instanceId } }`,
		map[string]any{"u": user}); errs != nil {
		t.Fatal(errs)
	}
	var id string
	testkit.WaitFor(t, 30*time.Second, "the request", func() error {
		d, errs, _ := gqlWith(t, url, tok, `query($u: ID!) { pendingApprovals(userId: $u) { id } }`, map[string]any{"u": user})
		list, _ := d["pendingApprovals"].([]any)
		if errs != nil || len(list) == 0 {
			return fmt.Errorf("pending %v %v", d, errs)
		}
		id = list[len(list)-1].(map[string]any)["id"].(string)
		return nil
	})
	return id
}

// gqlWith posts a GraphQL request with a bearer token ("" for none).
func gqlWith(t *testing.T, url, tok, query string, vars map[string]any) (map[string]any, []any, int) {
	t.Helper()
	h := []string{}
	if tok != "" {
		h = append(h, "Authorization", "Bearer "+tok)
	}
	r := stacktest.Do(t, http.MethodPost, url, map[string]any{"query": query, "variables": vars}, h...)
	data, _ := r.JSON["data"].(map[string]any)
	errs, _ := r.JSON["errors"].([]any)
	return data, errs, r.Status
}

// TestAGUIAuthorization: POST /agui (AG-UI) answers every kind of caller as
// GraphQL does, before any event: a run for a user, on a session, resuming
// an approval or reconnecting to a turn is the caller's own (or an admin's);
// another user's looks like an unknown one, and a refused token is refused.
func TestAGUIAuthorization(t *testing.T) {
	st := stacktest.Stack(t)
	gql, url := gqlURL(st, "gateway-jwt"), st.App("gateway-jwt").AppURL()+"/agui"
	alice := newData(t, gql, "alice-agui")
	run := func(user, thread, last string, resume string) map[string]any {
		in := map[string]any{"threadId": thread, "runId": unique("run"), "messages": []any{map[string]any{"id": unique("m"), "role": last, "content": "hello over AG-UI"}}}
		if last == "assistant" { // a reconnect to the turn whose reply this is
			in["messages"] = []any{map[string]any{"id": alice.instance, "role": "assistant", "content": ""}}
		}
		if user != "" {
			in["forwardedProps"] = map[string]any{"userId": user}
		}
		if resume != "" {
			in["messages"] = []any{}
			in["resume"] = []any{map[string]any{"interruptId": resume, "status": "cancelled", "payload": map[string]any{"reason": "matrix"}}}
		}
		return in
	}
	rows := []struct {
		name string
		in   map[string]any
		want expect3 // HTTP status for own, other, admin
	}{
		{"a turn for the user on their session", run(alice.user, alice.session, "user", ""), expect3{200, 403, 200}},
		{"a turn for the caller on the user's session", run("", alice.session, "user", ""), expect3{200, 403, 403}}, // an admin's own turn: not on another's session
		{"a reconnect to the user's turn", run(alice.user, alice.session, "assistant", ""), expect3{200, 404, 200}},
		{"an answer to the user's approval", run(alice.user, alice.session, "", "set per caller"), expect3{200, 404, 200}},
	}
	for _, row := range rows {
		for _, c := range callers {
			t.Run(row.name+"/"+c.name, func(t *testing.T) {
				pending := ""
				if row.in["resume"] != nil { // one that waits
					pending = waitingApproval(t, gql, alice.user)
					row.in["resume"].([]any)[0].(map[string]any)["interruptId"] = pending
				}
				h := []string{}
				if tok := c.token(t, alice.user); tok != "" {
					h = append(h, "Authorization", "Bearer "+tok)
				}
				r := stacktest.Do(t, http.MethodPost, url, row.in, h...)
				want := map[string]int{"own": row.want.own, "other": row.want.other, "admin": row.want.admin, "none": 401, "bad": 401}[c.class]
				if r.Status != want {
					t.Fatalf("status %d (%s); want %d", r.Status, r.Body, want)
				}
				if want == 200 && (!strings.HasPrefix(string(r.Body), `data: {"type":"RUN_STARTED"`) || !strings.Contains(string(r.Body), `"type":"RUN_FINISHED"`)) {
					t.Fatalf("events %s; want a run from RUN_STARTED to RUN_FINISHED", r.Body)
				}
				if pending != "" && want != 200 { // the refused answer changed nothing
					p, _, _ := gqlWith(t, gql, token(t, alice.user, ""), fmt.Sprintf(`{ pendingApprovals(userId: %q) { id } }`, alice.user), nil)
					if !strings.Contains(fmt.Sprint(p), pending) {
						t.Fatalf("after a refused answer %s is no longer pending: %v", pending, p)
					}
				}
			})
		}
	}
}

// expect3 is an HTTP status for each of the caller classes own, other and
// admin.
type expect3 struct{ own, other, admin int }
