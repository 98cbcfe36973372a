package turn

import (
	"context"
	"errors"
	"testing"

	"github.com/dapr/durabletask-go/workflow"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/statetest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// unreadable is a workflow engine whose turn's state cannot be loaded.
type unreadable struct{ Workflows }

var errUnloadable = errors.New("workflow 'chat-1': inbox key 'inbox-000000' declared in metadata (inboxLength=1) but missing from state store")

func (unreadable) FetchWorkflowMetadata(context.Context, string, ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error) {
	return nil, errUnloadable
}

func (unreadable) WaitForWorkflowCompletion(context.Context, string, ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error) {
	return nil, errUnloadable
}

// TestUnreadableWorkflowAnswersItsResult: a turn whose workflow can no
// longer be read (Dapr 1.18.2 after a partition healed) answers COMPLETED
// with the result it recorded; without a recorded result (or one of a
// stopped turn) it is unavailable, as before.
func TestUnreadableWorkflowAnswersItsResult(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		result *Result
		want   contract.RunStatus // "" = an error
	}{
		{name: "recorded", result: &Result{ID: "chat-1", Event: contract.ConversationUpdated{UserID: "u", SessionID: "s", AssistantReply: "hi"}}, want: contract.RunCompleted},
		{name: "none recorded"},
		{name: "stopped", result: &Result{ID: "chat-1", Stopped: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := statetest.New()
			if tc.result != nil {
				if _, err := saveResult(t.Context(), st, *tc.result, true); err != nil {
					t.Fatal(err)
				}
			}
			c := Client{Workflows: unreadable{}, State: st, Log: testkit.Quiet()}
			for _, read := range []func() (Run, error){
				func() (Run, error) { return c.Get(t.Context(), "chat-1") },
				func() (Run, error) { return c.Wait(t.Context(), "chat-1") },
			} {
				run, err := read()
				if tc.want == "" {
					if err == nil {
						t.Fatalf("answered %+v; want the workflow engine unavailable", run)
					}
					continue
				}
				if err != nil || run.Status != tc.want || run.Reply == nil || *run.Reply != "hi" || run.SessionID != "s" {
					t.Fatalf("answered %+v, %v; want %s with the recorded reply", run, err, tc.want)
				}
			}
		})
	}
}
