// Package turn runs a chat turn as the Dapr Workflow chat_workflow: the
// context (profile and recent history from agent-memory-service by service
// invocation) → the LLM with its tool loop, a round per generate_response
// → the turn saved (its result recorded, ConversationUpdated published with
// CloudEvent id = workflow instance id). The first round fetches the
// context and the last one saves the turn, so a plain turn is one activity
// (PatchFewerSteps; turns started before it run fetch_context and
// save_conversation as activities of their own). On failure handle_error
// records it and the workflow ends failed with a clear, client-safe error.
//
// Files by job, as Temporal's samples split them: workflow.go is the
// workflow function and what it passes around, deterministic (no I/O, no
// clock but the workflow's own, no randomness); activities.go holds all
// I/O, each activity with an explicit retry policy set here; client.go is
// how chat-service's HTTP handlers start, read, wait for and stop turns.
package turn

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

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
	ActRunTool      = "run_tool" // the built-in tool
	// A call that waits for a user's decision: its request recorded and
	// announced, and the wait's end without a decision.
	ActRequestApproval = "request_approval"
	ActExpireApproval  = "expire_approval"
	// ActToolDeadline stops an MCP tool call's workflow that outlives the
	// turn's ToolTimeout.
	ActToolDeadline = "tool_deadline"
)

// PatchFewerSteps is the workflow patch (durabletask's IsPatched) under
// which generate_response's first round fetches the context and its last
// one saves the turn: every workflow step is a reminder in Dapr's scheduler,
// state writes and an activity dispatch, and these two were steps of their
// own that a turn did not need. A turn whose history began before the patch
// replays as it ran.
const PatchFewerSteps = "context-and-save-in-rounds"

// Input of chat_workflow.
type Input struct {
	UserID    string   `json:"user_id"`
	SessionID string   `json:"session_id"`
	Text      string   `json:"text"`
	Tags      []string `json:"tags,omitempty"`
	// Trace is the W3C trace context of the request that started the turn;
	// the activities continue that trace.
	Trace map[string]string `json:"trace,omitempty"`
	// MaxSteps is how many rounds the model gets (AGENT_MAX_STEPS, set when
	// the turn starts); 0: DefaultMaxSteps.
	MaxSteps int `json:"max_steps,omitempty"`
	// ToolResultMax is the longest tool result given to the model
	// (TOOL_RESULT_MAX); 0: DefaultToolResultMax.
	ToolResultMax int `json:"tool_result_max,omitempty"`
	// ToolTimeout is how long an MCP tool call may take (TOOL_TIMEOUT);
	// 0: DefaultToolTimeout.
	ToolTimeout time.Duration `json:"tool_timeout,omitempty"`
	// ApprovalTimeout is how long a tool call waits for a user's decision
	// (APPROVAL_TIMEOUT); 0: DefaultApprovalTimeout.
	ApprovalTimeout time.Duration `json:"approval_timeout,omitempty"`
	// After is the session's turn before this one (set by the session's
	// actor): fetch_context makes sure the prompt has it, and the turns
	// before it, even when the memory has not applied their events yet.
	After string `json:"after,omitempty"`
}

// Defaults of Input.
const (
	DefaultMaxSteps        = 8
	DefaultToolResultMax   = 16 << 10
	DefaultApprovalTimeout = 10 * time.Minute
	DefaultToolTimeout     = 30 * time.Second
)

// Output of chat_workflow.
type Output struct {
	UserID    string    `json:"user_id"`
	SessionID string    `json:"session_id"`
	Reply     string    `json:"reply"`
	Timestamp time.Time `json:"timestamp"`
	// ToolCalls are the turn's tool calls, in order.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

// ToolCall is one tool call of a turn: what the model asked for, where it
// ran, what it answered.
type ToolCall struct {
	ID        string `json:"id"`
	Name      string `json:"name"`             // as the model knows it
	Arguments string `json:"arguments"`        // as the model wrote them
	Server    string `json:"server,omitempty"` // the MCPServer; "" for the built-in tool
	Tool      string `json:"tool,omitempty"`   // the server's own name of it
	// Args are what is sent: the model's arguments, with the turn's user for
	// a tool that acts for one.
	Args map[string]any `json:"args,omitempty"`
	// Refused says why the call was not sent (an unknown tool, arguments
	// that do not match its schema).
	Refused string `json:"refused,omitempty"`
	// NeedsApproval: the call waits for a user's decision (Policy) before
	// it runs; Approval is that request and its outcome.
	NeedsApproval bool               `json:"needs_approval,omitempty"`
	Approval      *contract.Approval `json:"approval,omitempty"`
	Result        string             `json:"result,omitempty"`
	Failed        bool               `json:"failed,omitempty"`
}

// Wire is the call as clients see it (stream, event, history): RUNNING
// until it has a result.
func (c ToolCall) Wire() contract.ToolCall {
	w := contract.ToolCall{ID: c.ID, Name: c.Name, Server: c.Server, Arguments: c.Arguments, Result: c.Result, Status: contract.ToolCompleted, Approval: c.Approval}
	switch {
	case c.Failed:
		w.Status = contract.ToolFailed
	case c.Result == "":
		w.Status = contract.ToolRunning
	}
	return w
}

// Step is one round of the model's: its text, and the tools it called.
type Step struct {
	Text  string     `json:"text,omitempty"`
	Calls []ToolCall `json:"calls,omitempty"`
	// Usage is what the round's LLM call took.
	Usage contract.Usage `json:"usage,omitzero"`
}

// Round is what one generate_response execution answers.
type Round struct {
	Text  string     `json:"text"`
	Calls []ToolCall `json:"calls,omitempty"`
	// Context is what a round that fetched it recalled (generateInput.Fetch).
	Context *Recalled `json:"context,omitempty"`
	// Saved: the round saved the turn (generateInput.Save).
	Saved bool `json:"saved,omitempty"`
	// Usage is what the round's LLM call took.
	Usage contract.Usage `json:"usage,omitzero"`
}

// UnmarshalJSON also reads the plain reply that generate_response answered
// before the tool loop was durable (turns in flight across the upgrade).
func (r *Round) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		*r = Round{}
		return json.Unmarshal(b, &r.Text)
	}
	type plain Round
	return json.Unmarshal(b, (*plain)(r))
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
	After      string            `json:"after,omitempty"` // the session's turn before
}

type generateInput struct {
	InstanceID string            `json:"instance_id"`
	UserID     string            `json:"user_id,omitempty"`
	Trace      map[string]string `json:"trace,omitempty"`
	Context    Recalled          `json:"context"`
	Text       string            `json:"text"`
	// Steps are the earlier rounds of this turn, with their tools' results.
	Steps []Step `json:"steps,omitempty"`
	// Fetch: the round fetches the context first (the turn's first round,
	// PatchFewerSteps) and answers it in Round.Context.
	Fetch *fetchInput `json:"fetch,omitempty"`
	// Save: a round that answers without tool calls saves the turn
	// (PatchFewerSteps) and says so in Round.Saved.
	Save *saveTurn `json:"save,omitempty"`
}

// saveTurn is what a last round needs to save the turn besides its input.
type saveTurn struct {
	SessionID string `json:"session_id"`
	After     string `json:"after,omitempty"` // the session's turn before
}

type approvalInput struct {
	Trace    map[string]string `json:"trace,omitempty"`
	Approval contract.Approval `json:"approval"`
}

type deadlineInput struct {
	CallID string        `json:"call_id"` // the MCP call's workflow instance
	After  time.Duration `json:"after"`
}

type toolInput struct {
	InstanceID string            `json:"instance_id"`
	Trace      map[string]string `json:"trace,omitempty"`
	Call       ToolCall          `json:"call"`
}

// mcpInput and mcpResult are the input and output of an MCP tool's workflow.
type mcpInput struct {
	Arguments map[string]any `json:"arguments,omitempty"`
}

type mcpResult struct {
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	StructuredContent json.RawMessage `json:"structuredContent,omitempty"`
	IsError           bool            `json:"isError"`
}

type saveInput struct {
	Event   contract.ConversationUpdated `json:"event"`
	EventID string                       `json:"event_id"`
	After   string                       `json:"after,omitempty"` // the session's turn before
	Trace   map[string]string            `json:"trace,omitempty"`
}

type errorInput struct {
	InstanceID string            `json:"instance_id"`
	SessionID  string            `json:"session_id,omitempty"`
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

func deadlineRetry() *workflow.RetryPolicy {
	return &workflow.RetryPolicy{MaxAttempts: 3, InitialRetryInterval: time.Second, BackoffCoefficient: 2, MaxRetryInterval: 5 * time.Second}
}

func toolRetry() *workflow.RetryPolicy {
	return &workflow.RetryPolicy{MaxAttempts: 3, InitialRetryInterval: 200 * time.Millisecond, BackoffCoefficient: 2, MaxRetryInterval: 2 * time.Second}
}

func approvalRetry() *workflow.RetryPolicy {
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
		_ = ctx.CallActivity(ActHandleError, workflow.WithActivityInput(errorInput{InstanceID: ctx.ID(), SessionID: in.SessionID, Trace: in.Trace, Stage: stage, Error: err.Error()}),
			workflow.WithActivityRetryPolicy(errorRetry())).Await(nil)
		return nil, fmt.Errorf("chat turn failed while %s", strings.ReplaceAll(stage, "_", " "))
	}

	fetch := fetchInput{InstanceID: ctx.ID(), Trace: in.Trace, UserID: in.UserID, SessionID: in.SessionID, After: in.After}
	var c Recalled
	fewer := ctx.IsPatched(PatchFewerSteps)
	if !fewer {
		ctx.SetCustomStatus(contract.StageContext)
		if err := ctx.CallActivity(ActFetchContext, workflow.WithActivityInput(fetch),
			workflow.WithActivityRetryPolicy(contextRetry())).Await(&c); err != nil {
			return fail(contract.StageContext, err)
		}
	}

	// The tool loop: each round of the model is an activity, each tool call
	// a step of its own (the built-in tool an activity, an MCP tool the
	// workflow Dapr runs it as), so a restart never repeats a step that had
	// completed and never loses one that had not.
	maxSteps := in.MaxSteps
	if maxSteps <= 0 {
		maxSteps = DefaultMaxSteps
	}
	var steps []Step
	var reply string
	var calls []ToolCall
	var usage contract.Usage
	saved := false
	for round := 1; ; round++ {
		if round > maxSteps {
			reply += fmt.Sprintf("\n\n(I stopped after %d steps without finishing; please ask again, perhaps in smaller parts.)", maxSteps)
			break
		}
		ctx.SetCustomStatus(contract.StageGenerate)
		gin := generateInput{InstanceID: ctx.ID(), UserID: in.UserID, Trace: in.Trace, Context: c, Text: in.Text, Steps: steps}
		if fewer {
			gin.Save = &saveTurn{SessionID: in.SessionID, After: in.After}
			if round == 1 {
				gin.Fetch = &fetch
			}
		}
		var r Round
		if err := ctx.CallActivity(ActGenerate, workflow.WithActivityInput(gin), workflow.WithActivityRetryPolicy(generateRetry())).Await(&r); err != nil {
			if strings.Contains(err.Error(), errSaving) {
				return fail(contract.StageSave, err)
			}
			return fail(contract.StageGenerate, err)
		}
		if r.Context != nil {
			c = *r.Context
		}
		usage = usage.Plus(r.Usage)
		reply += r.Text
		if len(r.Calls) == 0 {
			saved = r.Saved
			break
		}
		for i := range r.Calls {
			r.Calls[i] = callTool(ctx, in, r.Calls[i], CallID(ctx.ID(), round, i+1))
		}
		calls = append(calls, r.Calls...)
		steps = append(steps, Step{Text: r.Text, Calls: r.Calls, Usage: r.Usage})
	}

	if !saved { // a turn from before PatchFewerSteps, or one stopped at maxSteps
		ctx.SetCustomStatus(contract.StageSave)
		ev := contract.NewConversationUpdated(in.UserID, in.SessionID, in.Text, reply)
		ev.SentAt = ctx.CurrentTimeUTC() // the workflow's clock: the same on replay
		for _, c := range calls {
			ev.ToolCalls = append(ev.ToolCalls, c.Wire())
		}
		if usage != (contract.Usage{}) {
			ev.Usage = &usage
		}
		if err := ctx.CallActivity(ActSave, workflow.WithActivityInput(saveInput{Event: ev, EventID: ctx.ID(), After: in.After, Trace: in.Trace}),
			workflow.WithActivityRetryPolicy(saveRetry())).Await(nil); err != nil {
			return fail(contract.StageSave, err)
		}
	}
	return Output{UserID: in.UserID, SessionID: in.SessionID, Reply: reply, Timestamp: ctx.CurrentTimeUTC(), ToolCalls: calls}, nil
}

// CallID is the id of the n-th tool call of a turn's round: its MCP
// workflow's instance id, and what a tool that takes contract.ToolCallArg
// gets; the same for every attempt of the call.
func CallID(instanceID string, round, n int) string {
	return fmt.Sprintf("%s-r%d-t%d", instanceID, round, n)
}

// callTool runs one tool call as a step of the turn and returns it with its
// result: a refused call's reason, the built-in tool's answer (activity
// ActRunTool), or an MCP tool's (the workflow of Dapr's MCP engine, as a
// child workflow with a fixed id). A tool that fails gives the model an
// error result; the turn goes on. A result longer than the turn's
// ToolResultMax is cut, and the cut is marked.
func callTool(ctx *workflow.WorkflowContext, in Input, c ToolCall, childID string) ToolCall {
	if c.Refused == "" && c.NeedsApproval {
		if c = awaitApproval(ctx, in, c, childID); c.Result != "" {
			return c // not approved
		}
	}
	switch {
	case c.Refused != "":
		c.Result, c.Failed = "error: "+c.Refused, true
	case c.Server == "":
		ctx.SetCustomStatus(contract.StageTool)
		if err := ctx.CallActivity(ActRunTool, workflow.WithActivityInput(toolInput{InstanceID: ctx.ID(), Trace: in.Trace, Call: c}),
			workflow.WithActivityRetryPolicy(toolRetry())).Await(&c.Result); err != nil {
			c.Result, c.Failed = "error: the tool failed", true
		}
	default:
		ctx.SetCustomStatus(contract.StageTool)
		timeout := in.ToolTimeout
		if timeout <= 0 {
			timeout = DefaultToolTimeout
		}
		start := ctx.CurrentTimeUTC()
		call := ctx.CallChildWorkflow(MCPCallTool(c.Server, c.Tool), workflow.WithChildWorkflowInput(mcpInput{Arguments: c.Args}),
			workflow.WithChildWorkflowInstanceID(childID))
		// The deadline: an activity that stops the call's workflow once
		// the timeout has passed (the workflow API cannot wait for the
		// first of two tasks); not awaited — a call that ends first leaves
		// it nothing to stop.
		_ = ctx.CallActivity(ActToolDeadline, workflow.WithActivityInput(deadlineInput{CallID: childID, After: timeout}),
			workflow.WithActivityRetryPolicy(deadlineRetry()))
		var res mcpResult
		err := call.Await(&res)
		// A stopped (terminated) call ends without an output.
		if late := ctx.CurrentTimeUTC().Sub(start) >= timeout; late && (err != nil || len(res.Content) == 0 && len(res.StructuredContent) == 0) {
			c.Result, c.Failed = fmt.Sprintf("error: the tool did not answer within %s", timeout), true
			break
		}
		if err != nil {
			c.Result, c.Failed = "error: the tool could not be run (its server may be unavailable)", true
			break
		}
		var b strings.Builder
		for _, part := range res.Content {
			if part.Type == "text" || part.Type == "" {
				b.WriteString(part.Text)
			}
		}
		if b.Len() == 0 && len(res.StructuredContent) > 0 {
			b.Write(res.StructuredContent)
		}
		c.Result, c.Failed = b.String(), res.IsError
		if c.Failed && !strings.HasPrefix(c.Result, "error") {
			c.Result = "error: " + c.Result
		}
	}
	max := in.ToolResultMax
	if max <= 0 {
		max = DefaultToolResultMax
	}
	c.Result = cut(c.Result, max)
	return c
}

// awaitApproval asks the turn's user to decide on call c (id: the call's
// id) and waits for the decision — an external event — for at most the
// turn's ApprovalTimeout, all in the workflow's state, so the wait survives
// any restart. At the timeout the request's record says how it ended (a
// decision recorded just before counts). A call that was not approved comes
// back with the outcome as its result, for the model.
func awaitApproval(ctx *workflow.WorkflowContext, in Input, c ToolCall, id string) ToolCall {
	ctx.SetCustomStatus(contract.ApprovalStage(c.Name))
	timeout := in.ApprovalTimeout
	if timeout <= 0 {
		timeout = DefaultApprovalTimeout
	}
	now := ctx.CurrentTimeUTC()
	req := contract.Approval{ID: id, InstanceID: ctx.ID(), SessionID: in.SessionID, UserID: in.UserID, Server: c.Server, Tool: c.Tool,
		Name: c.Name, CallID: c.ID, Arguments: c.Arguments, RequestedAt: now, ExpiresAt: now.Add(timeout), Status: contract.ApprovalPending}
	var a contract.Approval
	if err := ctx.CallActivity(ActRequestApproval, workflow.WithActivityInput(approvalInput{Trace: in.Trace, Approval: req}),
		workflow.WithActivityRetryPolicy(approvalRetry())).Await(&a); err != nil {
		c.Result, c.Failed = "error: the user could not be asked to approve this call", true
		return c
	}
	if !a.Decided() {
		wait := a.ExpiresAt.Sub(ctx.CurrentTimeUTC())
		if err := ctx.WaitForExternalEvent(contract.ApprovalEvent(id), max(wait, 0)).Await(&a); err != nil {
			if err := ctx.CallActivity(ActExpireApproval, workflow.WithActivityInput(approvalInput{Trace: in.Trace, Approval: a}),
				workflow.WithActivityRetryPolicy(approvalRetry())).Await(&a); err != nil {
				a.Status = contract.ApprovalExpired
			}
		}
	}
	c.Approval = &a
	if a.Status != contract.ApprovalApproved {
		c.Result, c.Failed = a.Outcome(), true
	}
	ctx.SetCustomStatus(contract.StageTool)
	return c
}

// cut shortens s to at most max bytes (on a UTF-8 boundary) and says so.
func cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const mark = "\n[cut: the result was longer than %d bytes]"
	n := max
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + fmt.Sprintf(mark, max)
}
