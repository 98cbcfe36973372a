package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// TestQueuedTurnsSurviveKills: turns queued on one session (ENQUEUE) while
// chat-service — which hosts the session's actor —, its sidecar or Redis
// is killed and restarted all run, once each, in the order they were
// accepted.
func TestQueuedTurnsSurviveKills(t *testing.T) {
	st := stacktest.Stack(t)
	const n = 5
	for i, process := range []string{contract.ChatApp, contract.ChatApp + "-dapr", "redis"} {
		t.Run(process, func(t *testing.T) {
			if err := stacktest.Lost(); err != nil {
				t.Fatalf("not run: a process died unexpectedly earlier: %.300v", err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			user, session := fmt.Sprintf("queuer-%d", i), fmt.Sprintf("queue-%d-%d", i, time.Now().UnixNano()%1e6)
			var ids []string
			queued := 0
			for k := range n {
				d := gqlDo(t, st, "gateway", `mutation($in: SendMessageInput!) { startChat(input: $in) { instanceId status } }`,
					map[string]any{"in": map[string]any{"userId": user, "sessionId": session, "text": fmt.Sprintf("queued %d", k+1), "idempotencyKey": fmt.Sprintf("%s-%d", session, k)}})
				run := d["startChat"].(map[string]any)
				ids = append(ids, run["instanceId"].(string))
				if run["status"] == "QUEUED" {
					queued++
				}
			}
			if queued == 0 {
				t.Fatal("no turn was queued")
			}
			if _, err := st.RestartAfter(ctx, process, time.Second); err != nil {
				t.Fatalf("restart: %v", err)
			}
			for _, id := range ids {
				testkit.WaitFor(t, 2*time.Minute, id+" completed", func() error {
					d, errs := gqlTry(t, st, "gateway-2", `query($id: ID!) { chatRun(instanceId: $id) { status } }`, map[string]any{"id": id})
					run, _ := d["chatRun"].(map[string]any)
					if errs != nil || run["status"] != "COMPLETED" {
						return fmt.Errorf("%v %v", run, errs)
					}
					return nil
				})
			}
			var msgs []string
			testkit.WaitFor(t, time.Minute, "the history", func() error {
				d, errs := gqlTry(t, st, "gateway", `query($s: ID!) { conversation(sessionId: $s, last: 50) { messages { content } } }`, map[string]any{"s": session})
				list, _ := d["conversation"].(map[string]any)["messages"].([]any)
				msgs = msgs[:0]
				for _, m := range list {
					msgs = append(msgs, m.(map[string]any)["content"].(string))
				}
				if errs != nil || len(msgs) != 2*n {
					return fmt.Errorf("%d messages %v", len(msgs), errs)
				}
				return nil
			})
			for k := range n {
				if msgs[2*k] != fmt.Sprintf("queued %d", k+1) || !strings.Contains(msgs[2*k+1], fmt.Sprintf("%q", msgs[2*k])) {
					t.Fatalf("history %q; want the turns once each, in the order sent", msgs)
				}
			}
		})
	}
}
