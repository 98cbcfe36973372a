package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// TestKillsWhileWaitingForApproval: a turn whose tool call (delete_note:
// destructive, so it waits) waits for its user's decision while a process
// is killed and started again — chat-service, any sidecar, the gateway that
// showed the request, Redis, placement, the scheduler. After the restart the request is still
// pending; the decision, sent then (through the other gateway when the
// first was killed), completes the turn, and the tool ran exactly once.
func TestKillsWhileWaitingForApproval(t *testing.T) {
	st := stacktest.Stack(t)
	for i, process := range []string{contract.ChatApp, contract.ChatApp + "-dapr", "gateway", "gateway-dapr", contract.MemoryApp + "-dapr", contract.ToolApp + "-dapr", "redis", "placement", "scheduler"} {
		t.Run(process, func(t *testing.T) {
			if err := stacktest.Lost(); err != nil {
				t.Fatalf("not run: a process died unexpectedly earlier: %.300v", err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			user := fmt.Sprintf("waiter-%d-%d", i, time.Now().UnixNano()%1e6)
			gw, other := "gateway", "gateway-2"
			d := gqlDo(t, st, gw, `mutation($u: ID!, $t: String!) { startChat(input: {userId: $u, text: $t}) { instanceId } }`,
				map[string]any{"u": user, "t": `use tools_delete_note with {"id":"n-none"}`})
			instance := d["startChat"].(map[string]any)["instanceId"].(string)
			approval := waitPending(t, st, gw, user)
			if approval != instance+"-r1-t1" {
				t.Fatalf("request %s; want the turn's first call", approval)
			}
			if _, err := st.RestartAfter(ctx, process, time.Second); err != nil {
				t.Fatalf("restart: %v", err)
			}
			if process == "gateway" {
				gw, other = other, gw
			}
			if got := waitPending(t, st, gw, user); got != approval {
				t.Fatalf("after the restart %s pending; want %s", got, approval)
			}
			testkit.WaitFor(t, 90*time.Second, "the decision accepted", func() error {
				d, errs := gqlTry(t, st, other, `mutation($id: ID!) { decideToolCall(approvalId: $id, approve: true) { status } }`, map[string]any{"id": approval})
				if errs != nil || d["decideToolCall"].(map[string]any)["status"] != "APPROVED" {
					return fmt.Errorf("%v %v", d, errs)
				}
				return nil
			})
			testkit.WaitFor(t, 90*time.Second, "the turn completed", func() error {
				d, errs := gqlTry(t, st, gw, `query($id: ID!) { chatRun(instanceId: $id) { status reply } }`, map[string]any{"id": instance})
				run, _ := d["chatRun"].(map[string]any)
				if errs != nil || run["status"] != "COMPLETED" || !strings.Contains(fmt.Sprint(run["reply"]), "tools_delete_note answered") {
					return fmt.Errorf("%v %v", run, errs)
				}
				return nil
			})
			b, _ := os.ReadFile(executions)
			if n := strings.Count(string(b), approval+" delete_note\n"); n != 1 {
				t.Fatalf("the approved call ran %d times; want once", n)
			}
		})
	}
}

// gqlTry posts a GraphQL request to the named gateway; a transport error
// or a non-JSON answer is an error to retry.
func gqlTry(t *testing.T, st *stack.Stack, gateway, query string, vars map[string]any) (map[string]any, []any) {
	t.Helper()
	r, err := stacktest.Call(t.Context(), http.MethodPost, st.App(gateway).AppURL()+"/graphql", map[string]any{"query": query, "variables": vars})
	if err != nil {
		return nil, []any{err.Error()}
	}
	data, _ := r.JSON["data"].(map[string]any)
	errs, _ := r.JSON["errors"].([]any)
	if data == nil && errs == nil {
		errs = []any{fmt.Sprintf("HTTP %d %s", r.Status, r.Body)}
	}
	return data, errs
}

func gqlDo(t *testing.T, st *stack.Stack, gateway, query string, vars map[string]any) map[string]any {
	t.Helper()
	d, errs := gqlTry(t, st, gateway, query, vars)
	if errs != nil {
		t.Fatal(errs)
	}
	return d
}

// waitPending waits until the user has a pending request and returns the
// newest's id.
func waitPending(t *testing.T, st *stack.Stack, gateway, user string) string {
	t.Helper()
	var id string
	testkit.WaitFor(t, 90*time.Second, "a pending request", func() error {
		d, errs := gqlTry(t, st, gateway, `query($u: ID!) { pendingApprovals(userId: $u) { id } }`, map[string]any{"u": user})
		list, _ := d["pendingApprovals"].([]any)
		if errs != nil || len(list) == 0 {
			return fmt.Errorf("%v %v", d, errs)
		}
		id = list[len(list)-1].(map[string]any)["id"].(string)
		return nil
	})
	return id
}
