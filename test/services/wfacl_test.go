package services

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dapr/durabletask-go/workflow"
	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// intruderApp is another app of the stack: a sidecar whose workflows try to
// drive chat-service's.
const intruderApp = "intruder"

// TestOnlyChatServiceDrivesItsWorkflow: components/workflowaccesspolicy.yaml
// lets only chat-service schedule its workflow and run its activities, and
// start the MCP tool workflows its sidecar runs (the tool server's tools).
// Another app's workflow that calls chat_workflow as a child workflow on
// chat-service, or its generate_response activity (a free LLM call), is
// refused by chat-service's sidecar; chat-service's own turns run (every
// other test).
func TestOnlyChatServiceDrivesItsWorkflow(t *testing.T) {
	st := stacktest.Stack(t)
	c := intruderClient(t, st)
	wf := workflow.NewClient(c.GrpcClientConn())
	reg := workflow.NewRegistry()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(reg.AddWorkflowN("intrude_child", func(ctx *workflow.WorkflowContext) (any, error) {
		var out any
		err := ctx.CallChildWorkflow("chat_workflow", workflow.WithChildWorkflowAppID(contract.ChatApp),
			workflow.WithChildWorkflowInput(map[string]string{"user_id": "intruder", "session_id": "intruder-s", "text": "free LLM call"})).Await(&out)
		return out, err
	}))
	must(reg.AddWorkflowN("intrude_activity", func(ctx *workflow.WorkflowContext) (any, error) {
		var out any
		err := ctx.CallActivity("generate_response", workflow.WithActivityAppID(contract.ChatApp),
			workflow.WithActivityInput(map[string]any{"instance_id": "x", "text": "free LLM call"})).Await(&out)
		return out, err
	}))
	must(reg.AddWorkflowN("intrude_mcp", func(ctx *workflow.WorkflowContext) (any, error) {
		var out any
		err := ctx.CallChildWorkflow("dapr.internal.mcp."+contract.ToolServer+".CallTool.create_note", workflow.WithChildWorkflowAppID(contract.ChatApp),
			workflow.WithChildWorkflowInput(map[string]any{"arguments": map[string]any{contract.ToolUserArg: "victim", "text": "planted"}})).Await(&out)
		return out, err
	}))
	workerCtx, stop := context.WithCancel(context.Background())
	defer stop()
	must(wf.StartWorker(workerCtx, reg))
	for _, name := range []string{"intrude_child", "intrude_activity", "intrude_mcp"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			var id string
			testkit.WaitFor(t, 30*time.Second, "the intruder's workflow scheduled", func() error {
				var err error
				id, err = wf.ScheduleWorkflow(ctx, name)
				return err
			})
			meta, err := wf.WaitForWorkflowCompletion(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if meta.RuntimeStatus != workflow.StatusFailed || meta.FailureDetails == nil ||
				!strings.Contains(meta.FailureDetails.ErrorMessage, "denied by workflow access policy") {
				t.Fatalf("%s ended %s (%v); want FAILED, denied by the workflow access policy", name, meta.String(), meta.FailureDetails)
			}
		})
	}
}

// TestIntruderCannotDriveASession: Dapr applies no access policy to an
// app's actors, so another app's sidecar can call the session actor
// chat-service hosts. What it can ask for is bounded by chat-service's own
// state: accept names a turn by id, and the actor reads the turn from
// chat-service's state (keys only chat-service can write), so a made-up
// turn starts nothing.
func TestIntruderCannotDriveASession(t *testing.T) {
	st := stacktest.Stack(t)
	c := intruderClient(t, st)
	session := unique("intruded")
	for _, body := range []string{`"chat-forged"`, `{"instance_id":"chat-forged","input":{"user_id":"victim","session_id":"` + session + `","text":"free LLM call"}}`} {
		_, err := c.InvokeActor(t.Context(), &dapr.InvokeActorRequest{ActorType: contract.SessionActor, ActorID: session, Method: "accept", Data: []byte(body)})
		if err == nil {
			t.Fatalf("the intruder's accept %s went through", body)
		}
	}
	// Nothing started: the forged turn is unknown.
	if r := stacktest.Do(t, "GET", chatURL(st, "chat/chat-forged"), nil, token(st)...); r.Status != 404 {
		t.Fatalf("the forged turn: status %d; want 404", r.Status)
	}
}

// intruderClient is a Dapr client of the intruder app's sidecar.
func intruderClient(t *testing.T, st *stack.Stack) dapr.Client {
	t.Helper()
	c, err := dapr.NewClientWithAddress(st.App(intruderApp).SidecarGRPC())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	c.WithAuthToken(st.APIToken)
	return c
}
