package turn

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dapr/durabletask-go/workflow"
	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/statetest"
	"github.com/daca-go/daca/internal/dev/testkit"
	"github.com/daca-go/daca/internal/llm"
	"github.com/daca-go/daca/services/chat/approval"
)

type quiet struct{}

func (quiet) PublishEvent(context.Context, string, string, any, ...dapr.PublishEventOption) error {
	return nil
}

// TestApprovalWait: a call of a tool that needs approval waits — the turn
// AWAITING_APPROVAL, its stage naming the tool — for the user's decision,
// an external event: approved, it runs; denied, the model gets "denied by
// the user: <reason>" and the turn goes on to a reply without running it;
// with no decision in time, "timed out".
func TestApprovalWait(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		decide  *contract.Decision // nil: nobody decides
		timeout time.Duration
		status  contract.ApprovalStatus
		result  string
		runs    int32
	}{
		{"approved", &contract.Decision{Approve: true, DecidedBy: "ana"}, time.Minute, contract.ApprovalApproved, "echo hi for ana", 1},
		{"denied", &contract.Decision{Reason: "not today", DecidedBy: "ana"}, time.Minute, contract.ApprovalDenied, "denied by the user: not today", 0},
		{"expired", nil, time.Second, contract.ApprovalExpired, "denied: timed out", 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var runs atomic.Int32
			tool := echoTool(t)
			tool.Approval = true
			m := &scripted{script: []llm.Answer{
				{ToolCalls: []llm.ToolCall{{ID: "c1", Name: "tools_echo", Arguments: `{"text":"hi"}`}}},
				{Text: "Done."},
			}}
			store := &approval.Store{State: statetest.New(), Publisher: quiet{}, Log: testkit.Quiet()}
			a := &Activities{Memory: memoryOf(&memory{}), Publisher: &published{}, Model: m, Tools: fixedTools{tool}, Approvals: store, Log: testkit.Quiet()}
			c := engine(t, a, mcpEcho(&runs, false))
			store.Turns = c
			id := "chat-approval-" + string(rune('a'+i))
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if _, err := c.ScheduleWorkflow(ctx, WorkflowName, workflow.WithInstanceID(id),
				workflow.WithInput(Input{UserID: "ana", SessionID: "s1", Text: "echo hi", ApprovalTimeout: tt.timeout})); err != nil {
				t.Fatal(err)
			}
			var pending []contract.Approval
			testkit.WaitFor(t, 10*time.Second, "the request", func() error {
				pending, _ = store.Pending(ctx, "ana")
				if len(pending) != 1 {
					return errors.New("none pending")
				}
				return nil
			})
			if p := pending[0]; p.ID != CallID(id, 1, 1) || p.Server != "tools" || p.Tool != "echo" || p.Arguments != `{"text":"hi"}` || p.InstanceID != id {
				t.Fatalf("request %+v", p)
			}
			testkit.WaitFor(t, 10*time.Second, "AWAITING_APPROVAL", func() error {
				run, err := Client{Workflows: c, Log: testkit.Quiet()}.Get(ctx, id)
				if err != nil {
					return err
				}
				if run.Status != contract.RunAwaitingApproval || run.Stage != "awaiting_approval:tools_echo" {
					return errors.New(string(run.Status) + " " + run.Stage)
				}
				return nil
			})
			if tt.decide != nil {
				if _, err := store.Decide(ctx, pending[0].ID, *tt.decide); err != nil {
					t.Fatal(err)
				}
			}
			meta, err := c.WaitForWorkflowCompletion(ctx, id, workflow.WithFetchPayloads(true))
			if err != nil || meta.String() != "COMPLETED" {
				t.Fatalf("%v %v", meta, err)
			}
			var out Output
			json.Unmarshal([]byte(meta.Output.GetValue()), &out)
			if len(out.ToolCalls) != 1 {
				t.Fatalf("calls %+v", out.ToolCalls)
			}
			call := out.ToolCalls[0]
			if call.Approval == nil || call.Approval.Status != tt.status || !strings.HasPrefix(call.Result, tt.result) {
				t.Errorf("call %+v; want %s with %q", call, tt.status, tt.result)
			}
			if runs.Load() != tt.runs || out.Reply != "Done." {
				t.Errorf("the tool ran %d times (want %d); reply %q", runs.Load(), tt.runs, out.Reply)
			}
			if second := m.rounds[1]; !strings.Contains(second[len(second)-1].Content, tt.result) {
				t.Errorf("the model got %q; want %q", second[len(second)-1].Content, tt.result)
			}
		})
	}
}
