package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dapr/durabletask-go/workflow"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
)

// What chat-service runs and an intruder would like to start (names as
// services/chat/turn and Dapr's MCP engine give them; a test does not
// import service code).
var chatServiceWork = []struct {
	what     string
	child    string // a child workflow on chat-service
	activity string // or an activity on chat-service
}{
	{what: "chat_workflow", child: "chat_workflow"},
	{what: "an MCP tool workflow", child: "dapr.internal.mcp.tools.CallTool.create_note"},
	{what: "the MCP tool listing", child: "dapr.internal.mcp.tools.ListTools"},
	{what: "an activity of chat_workflow", activity: "save_conversation"},
}

// TestAnotherAppStartsNoWorkflow (row 6, second half): the intruder — a
// sidecar with a valid identity from sentry, on the infra host — runs a
// workflow of its own that starts chat_workflow, an MCP tool workflow, the
// tool listing and one of chat-service's activities on chat-service (Dapr's
// multi-app workflows). chat-service's sidecar refuses each by the
// WorkflowAccessPolicy (the caller's app id proven by mTLS), and the
// intruder's own activity, run just before in the same workflow, shows its
// worker works.
func TestAnotherAppStartsNoWorkflow(t *testing.T) {
	st := stacktest.Stack(t)
	intruder := st.App("intruder")
	if intruder == nil {
		var err error
		if intruder, err = st.StartApp(t.Context(), stack.App{ID: "intruder", Host: "h4"}); err != nil {
			t.Fatal(err)
		}
	}
	token := func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "dapr-api-token", st.APIToken)
	}
	conn, err := grpc.NewClient(intruder.SidecarGRPC(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(func(ctx context.Context, m string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, o ...grpc.CallOption) error {
			return inv(token(ctx), m, req, reply, cc, o...)
		}),
		grpc.WithStreamInterceptor(func(ctx context.Context, d *grpc.StreamDesc, cc *grpc.ClientConn, m string, s grpc.Streamer, o ...grpc.CallOption) (grpc.ClientStream, error) {
			return s(token(ctx), d, cc, m, o...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	reg := workflow.NewRegistry()
	if err := reg.AddActivityN("intruder_ping", func(workflow.ActivityContext) (any, error) { return "mine", nil }); err != nil {
		t.Fatal(err)
	}
	if err := reg.AddWorkflowN("intrude", func(ctx *workflow.WorkflowContext) (any, error) {
		var target struct{ Child, Activity string }
		if err := ctx.GetInput(&target); err != nil {
			return nil, err
		}
		var own string
		if err := ctx.CallActivity("intruder_ping").Await(&own); err != nil {
			return nil, fmt.Errorf("own activity: %w", err)
		}
		var err error
		if target.Child != "" {
			err = ctx.CallChildWorkflow(target.Child, workflow.WithChildWorkflowAppID(contract.ChatApp),
				workflow.WithChildWorkflowInput(map[string]any{"userId": "cl-intruder", "text": "let me in"})).Await(nil)
		} else {
			err = ctx.CallActivity(target.Activity, workflow.WithActivityAppID(contract.ChatApp),
				workflow.WithActivityInput(map[string]any{})).Await(nil)
		}
		if err != nil {
			return nil, fmt.Errorf("%s after %s: %w", target.Child+target.Activity, own, err)
		}
		return "in", nil
	}); err != nil {
		t.Fatal(err)
	}
	wf := workflow.NewClient(conn)
	wctx, stop := context.WithCancel(t.Context())
	defer stop()
	if err := wf.StartWorker(wctx, reg); err != nil {
		t.Fatal(err)
	}
	for _, w := range chatServiceWork {
		t.Run(w.what, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
			defer cancel()
			id, err := wf.ScheduleWorkflow(ctx, "intrude", workflow.WithInput(map[string]string{"Child": w.child, "Activity": w.activity}))
			if err != nil {
				t.Fatalf("scheduling on the intruder's own sidecar: %v", err)
			}
			meta, err := wf.WaitForWorkflowCompletion(ctx, id)
			if err != nil {
				t.Fatalf("waiting for the intruder's workflow: %v", err)
			}
			fd := meta.FailureDetails
			if meta.RuntimeStatus != workflow.StatusFailed || fd == nil {
				t.Fatalf("%s started on chat-service by another app: %s", w.what, meta.String())
			}
			msg := fd.GetErrorMessage()
			if !strings.Contains(msg, "after mine") || !strings.Contains(msg, "denied by workflow access policy") {
				t.Fatalf("want the intruder's own activity done and the call denied by the policy; got %q", msg)
			}
			t.Logf("refused: %s", msg)
		})
	}
}
