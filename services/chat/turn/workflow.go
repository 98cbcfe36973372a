// Package turn runs a chat turn as the Dapr Workflow chat_workflow:
// fetch_context (profile and recent history from agent-memory-service by
// service invocation) → generate_response (the LLM with its tool loop) →
// save_conversation (publish ConversationUpdated, CloudEvent id = workflow
// instance id). On failure handle_error records it and the workflow ends
// failed with a clear, client-safe error.
//
// Files by job, as Temporal's samples split them: workflow.go is the
// workflow function and what it passes around, deterministic (no I/O, no
// clock but the workflow's own, no randomness); activities.go holds all
// I/O, each activity with an explicit retry policy set here; client.go is
// how chat-service's HTTP handlers start, read, wait for and stop turns.
package turn

import (
	"fmt"
	"strings"
	"time"

	"github.com/dapr/durabletask-go/workflow"

	"github.com/daca-go/daca/internal/contract"
)

// Names of the workflow and its activities.
const (
	WorkflowName    = "chat_workflow"
	ActFetchContext = "fetch_context"
	ActGenerate     = "generate_response"
	ActSave         = "save_conversation"
	ActHandleError  = "handle_error"
)

// Input of chat_workflow.
type Input struct {
	UserID    string   `json:"user_id"`
	SessionID string   `json:"session_id"`
	Text      string   `json:"text"`
	Tags      []string `json:"tags,omitempty"`
	// Trace is the W3C trace context of the request that started the turn;
	// the activities continue that trace.
	Trace map[string]string `json:"trace,omitempty"`
}

// Output of chat_workflow.
type Output struct {
	UserID    string    `json:"user_id"`
	SessionID string    `json:"session_id"`
	Reply     string    `json:"reply"`
	Timestamp time.Time `json:"timestamp"`
}

// Recalled is what fetch_context recalls from agent-memory-service.
type Recalled struct {
	Profile  contract.Profile `json:"profile"`
	History  []contract.Entry `json:"history"`
	Degraded bool             `json:"degraded,omitempty"` // memory unreachable: defaults used
}

type fetchInput struct {
	InstanceID string            `json:"instance_id"`
	Trace      map[string]string `json:"trace,omitempty"`
	UserID     string            `json:"user_id"`
	SessionID  string            `json:"session_id"`
}

type generateInput struct {
	InstanceID string            `json:"instance_id"`
	UserID     string            `json:"user_id,omitempty"`
	Trace      map[string]string `json:"trace,omitempty"`
	Context    Recalled          `json:"context"`
	Text       string            `json:"text"`
}

type saveInput struct {
	Event   contract.ConversationUpdated `json:"event"`
	EventID string                       `json:"event_id"`
	Trace   map[string]string            `json:"trace,omitempty"`
}

type errorInput struct {
	InstanceID string            `json:"instance_id"`
	Trace      map[string]string `json:"trace,omitempty"`
	Stage      string            `json:"stage"`
	Error      string            `json:"error"`
}

// Retry policies of the activities. Each call gets a policy of its own:
// durabletask-go fills in defaults on the policy it is given (Validate writes
// to it), so one shared *RetryPolicy is a data race between workflows that
// run at once (found by the apps' race build, DACA_RACE=1).
func contextRetry() *workflow.RetryPolicy {
	return &workflow.RetryPolicy{MaxAttempts: 3, InitialRetryInterval: 200 * time.Millisecond, BackoffCoefficient: 2, MaxRetryInterval: 2 * time.Second}
}

func generateRetry() *workflow.RetryPolicy {
	return &workflow.RetryPolicy{MaxAttempts: 3, InitialRetryInterval: time.Second, BackoffCoefficient: 2, MaxRetryInterval: 10 * time.Second}
}

func saveRetry() *workflow.RetryPolicy {
	return &workflow.RetryPolicy{MaxAttempts: 5, InitialRetryInterval: 500 * time.Millisecond, BackoffCoefficient: 2, MaxRetryInterval: 5 * time.Second}
}

func errorRetry() *workflow.RetryPolicy {
	return &workflow.RetryPolicy{MaxAttempts: 2, InitialRetryInterval: 200 * time.Millisecond, BackoffCoefficient: 2}
}

// Workflow is chat_workflow.
func Workflow(ctx *workflow.WorkflowContext) (any, error) {
	var in Input
	if err := ctx.GetInput(&in); err != nil {
		return nil, fmt.Errorf("chat turn failed: bad input")
	}
	fail := func(stage string, err error) (any, error) {
		_ = ctx.CallActivity(ActHandleError, workflow.WithActivityInput(errorInput{InstanceID: ctx.ID(), Trace: in.Trace, Stage: stage, Error: err.Error()}),
			workflow.WithActivityRetryPolicy(errorRetry())).Await(nil)
		return nil, fmt.Errorf("chat turn failed while %s", strings.ReplaceAll(stage, "_", " "))
	}

	ctx.SetCustomStatus(contract.StageContext)
	var c Recalled
	if err := ctx.CallActivity(ActFetchContext, workflow.WithActivityInput(fetchInput{InstanceID: ctx.ID(), Trace: in.Trace, UserID: in.UserID, SessionID: in.SessionID}),
		workflow.WithActivityRetryPolicy(contextRetry())).Await(&c); err != nil {
		return fail(contract.StageContext, err)
	}

	ctx.SetCustomStatus(contract.StageGenerate)
	var reply string
	if err := ctx.CallActivity(ActGenerate, workflow.WithActivityInput(generateInput{InstanceID: ctx.ID(), UserID: in.UserID, Trace: in.Trace, Context: c, Text: in.Text}),
		workflow.WithActivityRetryPolicy(generateRetry())).Await(&reply); err != nil {
		return fail(contract.StageGenerate, err)
	}

	ctx.SetCustomStatus(contract.StageSave)
	ev := contract.NewConversationUpdated(in.UserID, in.SessionID, in.Text, reply)
	ev.SentAt = ctx.CurrentTimeUTC() // the workflow's clock: the same on replay
	if err := ctx.CallActivity(ActSave, workflow.WithActivityInput(saveInput{Event: ev, EventID: ctx.ID(), Trace: in.Trace}),
		workflow.WithActivityRetryPolicy(saveRetry())).Await(nil); err != nil {
		return fail(contract.StageSave, err)
	}
	return Output{UserID: in.UserID, SessionID: in.SessionID, Reply: reply, Timestamp: ctx.CurrentTimeUTC()}, nil
}
