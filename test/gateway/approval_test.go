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

const (
	approvalFields = `id instanceId sessionId userId server tool arguments requestedAt expiresAt status reason decidedBy`
	decide         = `mutation($id: ID!, $ok: Boolean!, $why: String) { decideToolCall(approvalId: $id, approve: $ok, reason: $why) { ` + approvalFields + ` } }`
	runOf          = `query($id: ID!) { chatRun(instanceId: $id) { status stage reply } }`
)

// waitingTurn starts a turn that asks for a note (tools/create_note: no
// readOnlyHint, so it waits for approval) and returns the turn and the
// request, as approvalRequested delivered it on replica.
func waitingTurn(t *testing.T, st *stack.Stack, replica, user, note string) (instance string, approval map[string]any) {
	t.Helper()
	ws := subscribed(t, st, replica, "a", `subscription($u: ID!) { approvalRequested(userId: $u) { `+approvalFields+` } }`, map[string]any{"u": user})
	defer ws.Close()
	waitSubscribers(t, st, replica, "approvals", 1)
	instance, _ = startTurn(t, st, user, "remind me to "+note)
	approval = ws.Data("a", 60*time.Second)["approvalRequested"].(map[string]any)
	if approval["instanceId"] != instance || approval["status"] != "PENDING" || approval["server"] != "tools" || approval["tool"] != "create_note" ||
		approval["userId"] != user || !strings.Contains(fmt.Sprint(approval["arguments"]), note) {
		t.Fatalf("requested %v; want a pending create_note of turn %s", approval, instance)
	}
	return instance, approval
}

// finished waits for the turn's end and returns its status and reply.
func finished(t *testing.T, st *stack.Stack, instance string) (string, string) {
	t.Helper()
	var run map[string]any
	testkit.WaitFor(t, 60*time.Second, "the turn's end", func() error {
		d, _, _ := gql(t, gqlURL(st, "gateway"), runOf, map[string]any{"id": instance})
		run, _ = d["chatRun"].(map[string]any)
		if s := fmt.Sprint(run["status"]); s == "RUNNING" || s == "PENDING" || s == "AWAITING_APPROVAL" {
			return fmt.Errorf("status %s", s)
		}
		return nil
	})
	return fmt.Sprint(run["status"]), fmt.Sprint(run["reply"])
}

// TestApproveOnTheOtherReplica: a call that waits shows as
// AWAITING_APPROVAL (stage naming the tool), in pendingApprovals and in the
// turn's chatStream with its request; approved on the other gateway
// replica, it runs and the turn replies with its result; deciding again
// answers the first decision; the history keeps the call with its approval.
func TestApproveOnTheOtherReplica(t *testing.T) {
	st := stacktest.Stack(t)
	user := unique("approver")
	instance, req := waitingTurn(t, st, "gateway", user, "water the plants")
	id := req["id"].(string)

	d, _, _ := gql(t, gqlURL(st, "gateway"), runOf, map[string]any{"id": instance})
	if run := d["chatRun"].(map[string]any); run["status"] != "AWAITING_APPROVAL" || run["stage"] != "awaiting_approval:tools_create_note" {
		t.Fatalf("chatRun while it waits: %v", run)
	}
	d, errs, _ := gql(t, gqlURL(st, "gateway-2"), `query($u: ID!) { pendingApprovals(userId: $u) { id status } }`, map[string]any{"u": user})
	if list, _ := d["pendingApprovals"].([]any); errs != nil || len(list) != 1 || list[0].(map[string]any)["id"] != id {
		t.Fatalf("pendingApprovals: %v %v", d, errs)
	}
	// The turn's stream shows the call with its request.
	ws := subscribed(t, st, "gateway-2", "s", `subscription($id: ID!) { chatStream(instanceId: $id) { seq delta text done status toolCall { name status result approval { id status decidedBy } } } }`,
		map[string]any{"id": instance})
	waiting := false
	for !waiting {
		c := ws.Data("s", 30*time.Second)["chatStream"].(map[string]any)
		tc, _ := c["toolCall"].(map[string]any)
		a, _ := tc["approval"].(map[string]any)
		waiting = a["id"] == id && a["status"] == "PENDING"
	}

	d, errs, _ = gql(t, gqlURL(st, "gateway-2"), decide, map[string]any{"id": id, "ok": true})
	if a, _ := d["decideToolCall"].(map[string]any); errs != nil || a["status"] != "APPROVED" || a["decidedBy"] != user {
		t.Fatalf("approve: %v %v", d, errs)
	}
	status, reply := finished(t, st, instance)
	if status != "COMPLETED" || !strings.Contains(reply, "tools_create_note answered: noted") {
		t.Fatalf("after the approval: %s %q", status, reply)
	}
	// Again, the other way: the first decision stands.
	d, errs, _ = gql(t, gqlURL(st, "gateway"), decide, map[string]any{"id": id, "ok": false, "why": "changed my mind"})
	if a, _ := d["decideToolCall"].(map[string]any); errs != nil || a["status"] != "APPROVED" || a["reason"] != nil {
		t.Fatalf("deciding again: %v %v; want the first decision", d, errs)
	}
	d, _, _ = gql(t, gqlURL(st, "gateway"), `query($u: ID!) { pendingApprovals(userId: $u) { id } }`, map[string]any{"u": user})
	if list, _ := d["pendingApprovals"].([]any); len(list) != 0 {
		t.Fatalf("still pending: %v", d)
	}
	testkit.WaitFor(t, 30*time.Second, "the call in the history", func() error {
		d, _, _ := gql(t, gqlURL(st, "gateway"), `query($u: ID!) { sessions(userId: $u) { messages(last: 1) { toolCalls { name status approval { status decidedBy } } } } }`, map[string]any{"u": user})
		if s := fmt.Sprint(d["sessions"]); !strings.Contains(s, "approval:map[decidedBy:"+user+" status:APPROVED]") {
			return fmt.Errorf("sessions %s", s)
		}
		return nil
	})
}

// TestDenyExpireCancel: a denial with a reason reaches the agent as the
// call's result and the turn replies; a request nobody decides expires
// (APPROVAL_TIMEOUT) and the agent hears it timed out; a turn cancelled
// while it waits ends TERMINATED. Deciding after the expiry or the
// cancellation is BAD_USER_INPUT; another user's request looks unknown.
func TestDenyExpireCancel(t *testing.T) {
	st := stacktest.Stack(t)
	user := unique("denier")

	instance, req := waitingTurn(t, st, "gateway", user, "call mom")
	d, errs, _ := gql(t, gqlURL(st, "gateway"), decide, map[string]any{"id": req["id"], "ok": false, "why": "not today"})
	if a, _ := d["decideToolCall"].(map[string]any); errs != nil || a["status"] != "DENIED" || a["reason"] != "not today" {
		t.Fatalf("deny: %v %v", d, errs)
	}
	if status, reply := finished(t, st, instance); status != "COMPLETED" || !strings.Contains(reply, "denied by the user: not today") {
		t.Fatalf("after the denial: %s %q", status, reply)
	}

	// Another user (JWT gateway): the request looks unknown, and stays pending.
	other := unique("other")
	instance, req = waitingTurn(t, st, "gateway-2", other, "buy bread")
	_, errs, _ = gqlWith(t, gqlURL(st, "gateway-jwt"), token(t, unique("mallory"), ""), decide, map[string]any{"id": req["id"], "ok": true})
	if code(errs) != "NOT_FOUND" {
		t.Fatalf("another user's decision: %v; want NOT_FOUND", errs)
	}
	_, errs, _ = gqlWith(t, gqlURL(st, "gateway-jwt"), token(t, unique("mallory"), ""), decide, map[string]any{"id": "chat-unknown-r1-t1", "ok": true})
	if code(errs) != "NOT_FOUND" {
		t.Fatalf("an unknown request: %v; want NOT_FOUND", errs)
	}
	d, _, _ = gql(t, gqlURL(st, "gateway"), `query($u: ID!) { pendingApprovals(userId: $u) { id } }`, map[string]any{"u": other})
	if list, _ := d["pendingApprovals"].([]any); len(list) != 1 {
		t.Fatalf("the refused decision changed the request: %v", d)
	}
	// Nobody decides: it expires.
	if status, reply := finished(t, st, instance); status != "COMPLETED" || !strings.Contains(reply, "timed out") {
		t.Fatalf("after the expiry: %s %q", status, reply)
	}
	_, errs, _ = gql(t, gqlURL(st, "gateway"), decide, map[string]any{"id": req["id"], "ok": true})
	if code(errs) != "BAD_USER_INPUT" || !strings.Contains(fmt.Sprint(errs), "expired") {
		t.Fatalf("deciding after the expiry: %v; want BAD_USER_INPUT", errs)
	}

	// Cancelled while it waits.
	instance, req = waitingTurn(t, st, "gateway", user, "feed the cat")
	d, errs, _ = gql(t, gqlURL(st, "gateway-2"), `mutation($id: ID!) { cancelChat(instanceId: $id) { status } }`, map[string]any{"id": instance})
	if errs != nil || d["cancelChat"].(map[string]any)["status"] != "TERMINATED" {
		t.Fatalf("cancelChat: %v %v", d, errs)
	}
	_, errs, _ = gql(t, gqlURL(st, "gateway"), decide, map[string]any{"id": req["id"], "ok": true})
	if code(errs) != "BAD_USER_INPUT" || !strings.Contains(fmt.Sprint(errs), "cancelled") {
		t.Fatalf("deciding after cancelChat: %v; want BAD_USER_INPUT", errs)
	}
	d, _, _ = gql(t, gqlURL(st, "gateway"), `query($u: ID!) { pendingApprovals(userId: $u) { id } }`, map[string]any{"u": user})
	if list, _ := d["pendingApprovals"].([]any); len(list) != 0 {
		t.Fatalf("pending after the cancel: %v", d)
	}
}

// TestApprovalRequestedResumes: a subscriber that (re)connects first gets
// every request still pending, then new ones.
func TestApprovalRequestedResumes(t *testing.T) {
	st := stacktest.Stack(t)
	user := unique("resumer")
	_, first := waitingTurn(t, st, "gateway", user, "pay the rent")
	ws := subscribed(t, st, "gateway-2", "a", `subscription($u: ID!) { approvalRequested(userId: $u) { id status } }`, map[string]any{"u": user})
	if a := ws.Data("a", 30*time.Second)["approvalRequested"].(map[string]any); a["id"] != first["id"] || a["status"] != "PENDING" {
		t.Fatalf("first on reconnecting: %v; want the pending %s", a, first["id"])
	}
	startTurn(t, st, user, "remind me to call the bank")
	if a := ws.Data("a", 60*time.Second)["approvalRequested"].(map[string]any); a["id"] == first["id"] {
		t.Fatalf("got the first request again: %v", a)
	}
}
