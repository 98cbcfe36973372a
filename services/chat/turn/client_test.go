package turn

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dapr/durabletask-go/api"
	"github.com/dapr/durabletask-go/workflow"
	"google.golang.org/protobuf/types/known/wrapperspb"

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
			st := recorded(t, tc.result)
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

// watchless is a workflow engine whose watch of a workflow never hears of
// its end (the watch runs until its context ends) and whose reads answer
// status; its actor refuses a terminate, as a stalled one does.
type watchless struct {
	Workflows
	status     api.OrchestrationStatus
	output     string // of a completed workflow
	terminated chan string
}

func (w watchless) FetchWorkflowMetadata(context.Context, string, ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error) {
	m := &workflow.WorkflowMetadata{RuntimeStatus: w.status}
	if w.output != "" {
		m.Output = wrapperspb.String(w.output)
	}
	return m, nil
}

func (watchless) WaitForWorkflowCompletion(ctx context.Context, _ string, _ ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (w watchless) TerminateWorkflow(_ context.Context, id string, _ ...workflow.TerminateOptions) error {
	w.terminated <- id
	return errors.New("failed to invoke reminder for workflow 'chat-1': actor is stalled")
}

// TestWaitDoesNotRelyOnTheWatch: a turn that ended while the engine's watch
// did not hear of it is answered after one window, not at the caller's
// deadline; a turn Dapr stalled fails clearly (or completes, when its
// result was recorded), never a later round's save after it, and its
// session is handed on (Ended).
func TestWaitDoesNotRelyOnTheWatch(t *testing.T) {
	t.Parallel()
	reply := "hi"
	for _, tc := range []struct {
		name      string
		status    api.OrchestrationStatus
		output    string
		result    *Result
		want      contract.RunStatus
		wantReply bool
	}{
		{name: "completed, watch deaf", status: workflow.StatusCompleted, output: `{"reply":"hi"}`, want: contract.RunCompleted, wantReply: true},
		{name: "stalled, nothing recorded", status: workflow.StatusStalled, want: contract.RunFailed},
		{name: "stalled after its result was recorded", status: workflow.StatusStalled,
			result: &Result{ID: "chat-1", Event: contract.ConversationUpdated{UserID: "u", SessionID: "s", AssistantReply: reply}}, want: contract.RunCompleted, wantReply: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := recorded(t, tc.result)
			eng := watchless{status: tc.status, output: tc.output, terminated: make(chan string, 10)}
			c := Client{Workflows: eng, State: st, Log: testkit.Quiet(), WaitWindow: 50 * time.Millisecond}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			run, err := c.Wait(ctx, "chat-1")
			if err != nil || run.Status != tc.want || (run.Reply != nil && *run.Reply == reply) != tc.wantReply {
				t.Fatalf("Wait answered %+v, %v; want %s (reply %v)", run, err, tc.want, tc.wantReply)
			}
			if tc.want == contract.RunFailed && run.Error != stalledTurn {
				t.Fatalf("error %q; want %q", run.Error, stalledTurn)
			}
			ended, err := c.Ended(ctx, "chat-1")
			if err != nil || !ended {
				t.Fatalf("Ended = %v, %v; want the turn ended", ended, err)
			}
			if tc.status != workflow.StatusStalled {
				return
			}
			// What stands for the turn now: its result, or its stop (a late
			// round's first-written save is refused).
			r, err := readResult(ctx, st, "chat-1")
			if err != nil || r == nil || r.Stopped != (tc.result == nil) {
				t.Fatalf("recorded %+v, %v", r, err)
			}
			if tc.result == nil && len(eng.terminated) == 0 {
				t.Fatal("a stalled turn with nothing recorded was not terminated in the engine")
			}
			// Read again, it answers the same from what is recorded: no
			// write, no terminate.
			writes, terminates := st.Writes(), len(eng.terminated)
			again, err := c.Get(ctx, "chat-1")
			if err != nil || again.Status != run.Status || again.Error != run.Error {
				t.Fatalf("read again: %+v, %v; want %+v", again, err, run)
			}
			if st.Writes() != writes || len(eng.terminated) != terminates {
				t.Fatalf("read again: %d writes, %d terminates more; want none", st.Writes()-writes, len(eng.terminated)-terminates)
			}
		})
	}
}

// unstarted is a workflow engine whose workflow stays PENDING (its first
// run dropped) until an event reaches it; then it completes.
type unstarted struct {
	watchless
	mu     sync.Mutex
	events []string
}

func (u *unstarted) FetchWorkflowMetadata(context.Context, string, ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.events) == 0 {
		return &workflow.WorkflowMetadata{RuntimeStatus: workflow.StatusPending}, nil
	}
	return &workflow.WorkflowMetadata{RuntimeStatus: workflow.StatusCompleted, Output: wrapperspb.String(`{"reply":"hi"}`)}, nil
}

func (u *unstarted) RaiseEvent(_ context.Context, _, name string, _ ...workflow.RaiseEventOptions) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.events = append(u.events, name)
	return nil
}

// TestWaitNudgesATurnThatNeverStarted: a turn whose workflow stays PENDING
// (Dapr 1.18.2 dropped its first run while its actor moved) is nudged
// with an event, which runs it, and Wait answers its end.
func TestWaitNudgesATurnThatNeverStarted(t *testing.T) {
	t.Parallel()
	eng := &unstarted{}
	c := Client{Workflows: eng, State: statetest.New(), Log: testkit.Quiet(), WaitWindow: 20 * time.Millisecond, NudgeAfter: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	run, err := c.Wait(ctx, "chat-1")
	if err != nil || run.Status != contract.RunCompleted || run.Reply == nil || *run.Reply != "hi" {
		t.Fatalf("Wait answered %+v, %v; want the nudged turn completed", run, err)
	}
	if len(eng.events) != 1 || eng.events[0] != nudgeEvent {
		t.Fatalf("events raised %q; want one %q", eng.events, nudgeEvent)
	}
}

// recorded is a state store holding r as its turn's recorded result (nil:
// none).
func recorded(t *testing.T, r *Result) *statetest.State {
	t.Helper()
	st := statetest.New()
	if r != nil {
		if _, err := saveResult(t.Context(), st, *r, true); err != nil {
			t.Fatal(err)
		}
	}
	return st
}
