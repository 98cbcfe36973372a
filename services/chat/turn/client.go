package turn

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/dapr/durabletask-go/api"
	"github.com/dapr/durabletask-go/workflow"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/logging"
	"github.com/daca-go/daca/internal/telemetry"
)

// Workflows is the part of the workflow client (Dapr's, through the
// sidecar) that Client uses.
type Workflows interface {
	ScheduleWorkflow(ctx context.Context, orchestrator string, opts ...workflow.NewWorkflowOptions) (string, error)
	FetchWorkflowMetadata(ctx context.Context, id string, opts ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error)
	WaitForWorkflowCompletion(ctx context.Context, id string, opts ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error)
	TerminateWorkflow(ctx context.Context, id string, opts ...workflow.TerminateOptions) error
	RaiseEvent(ctx context.Context, id, eventName string, opts ...workflow.RaiseEventOptions) error
}

// Client starts, reads, waits for and stops chat turns (chat_workflow
// instances). Its errors are apperr-coded: NotFound for an unknown turn,
// Unavailable when the workflow engine cannot be asked.
type Client struct {
	Workflows Workflows
	// State reads what a turn leaves besides its workflow: the marker of a
	// turn that waits for its session (QueuedKey) and a completed turn's
	// result (ResultKey); nil: neither is read.
	State State
	Log   *slog.Logger
	// WaitWindow bounds each wait on the engine's watch of a turn (Wait);
	// default 5 s. NudgeAfter is how long a turn's workflow may stay
	// PENDING (created, not started) while Wait waits before it is nudged
	// (nudge), and again after as long; default 10 s (a workflow starts
	// within milliseconds).
	WaitWindow, NudgeAfter time.Duration
}

// Run is a turn as GET /chat/{instance_id} shows it, with its output.
type Run struct {
	contract.ChatRun
	Output Output // of a COMPLETED turn
}

func unavailable(err error) error {
	return apperr.Wrap(apperr.Unavailable, err, "the workflow engine is unavailable")
}

// Start schedules the turn id with in; a turn that exists already (a
// repeated start) counts as started. Turns are started by their session
// (package session), one at a time.
//
// Dapr schedules an instance id that has completed once more (no reuse
// policy in its workflow API): a start that may repeat one made before —
// the session's state not saved after the first — looks first, and finds
// the turn rather than running it again; fresh says the caller has just
// found no turn with this id (the request's own check), and skips the look.
func (c Client) Start(ctx context.Context, id string, in Input, fresh bool) error {
	if !fresh {
		if _, err := c.fetch(ctx, id); err == nil {
			return nil
		} else if !notFound(err) {
			return unavailable(err)
		}
	}
	if in.Trace == nil {
		in.Trace = telemetry.Carrier(ctx)
	}
	if _, err := c.Workflows.ScheduleWorkflow(ctx, WorkflowName, workflow.WithInstanceID(id), workflow.WithInput(in)); err != nil {
		if strings.Contains(strings.ToLower(err.Error()), "already exists") {
			return nil
		}
		return unavailable(err)
	}
	logging.From(ctx, c.Log).Info("chat turn started", "workflow_instance_id", id, "user_id", in.UserID, "session_id", in.SessionID)
	return nil
}

// Ended reports whether turn id has ended (or was never started).
func (c Client) Ended(ctx context.Context, id string) (bool, error) {
	meta, err := c.fetch(ctx, id)
	if err != nil {
		if notFound(err) {
			return true, nil
		}
		return false, unavailable(err)
	}
	if contract.RunStatus(meta.String()) == contract.RunStalled {
		if _, err := c.settle(ctx, describe(id, meta)); err != nil {
			return false, err
		}
		return true, nil
	}
	return contract.RunStatus(meta.String()).Terminal(), nil
}

// Stop terminates turn id (an unknown or ended one is left alone). It
// records first that the turn is stopped, so that its last round, which
// saves the turn and runs on after a terminate, saves nothing; a turn
// whose result was recorded first has completed and is left to finish.
func (c Client) Stop(ctx context.Context, id string) error {
	_, err := c.stop(ctx, id, false)
	return err
}

// stop is Stop; it answers the result of a turn that completed first.
// With bestEffort, an engine that refuses the terminate (a stalled
// workflow's actor may refuse every call) is logged, not an error: the
// recorded stop is what counts.
func (c Client) stop(ctx context.Context, id string, bestEffort bool) (*Result, error) {
	if c.State != nil {
		r, err := markStopped(ctx, c.State, id)
		if err != nil {
			return nil, apperr.Wrap(apperr.Unavailable, err, "the state store is unavailable")
		}
		if r != nil {
			return r, nil
		}
	}
	if err := c.Workflows.TerminateWorkflow(ctx, id); err != nil && !notFound(err) {
		if !bestEffort {
			return nil, unavailable(err)
		}
		logging.From(ctx, c.Log).Warn("the turn's workflow could not be terminated", "workflow_instance_id", id, "err", err)
	}
	return nil, nil
}

// QueuedKey is the state key of the marker of turn id while it waits for
// its session (written by the session's actor: session.Marker).
func QueuedKey(id string) string { return "queued|" + id }

// Queued is a waiting turn's marker.
type Queued struct {
	SessionID string `json:"session_id"`
	UserID    string `json:"user_id"`
	Cancelled bool   `json:"cancelled,omitempty"`
}

// Get reads a turn: its workflow; a turn waiting for its session is
// QUEUED; a running turn whose result is recorded (its event is published,
// the workflow is finishing) is COMPLETED with it: the result is read
// while the workflow says it generates or saves.
func (c Client) Get(ctx context.Context, id string) (Run, error) {
	meta, err := c.fetch(ctx, id)
	if err != nil {
		if notFound(err) {
			if run, ok := c.waiting(ctx, id); ok {
				return run, nil
			}
			return Run{}, apperr.New(apperr.NotFound, "chat turn %s not found", id)
		}
		if run, ok := c.recorded(ctx, id, err); ok {
			return run, nil
		}
		return Run{}, unavailable(err)
	}
	run := describe(id, meta)
	if run.Status == contract.RunStalled {
		return c.settle(ctx, run)
	}
	// The last round saves the turn (PatchFewerSteps) while the stage still
	// says generating; save_conversation is a stage of its own otherwise.
	if run.Status == contract.RunRunning && (run.Stage == contract.StageSave || run.Stage == contract.StageGenerate) && c.State != nil {
		if r, err := readResult(ctx, c.State, id); err == nil && r != nil && !r.Stopped {
			return completed(id, *r), nil
		}
	}
	return run, nil
}

// waiting is the turn id as its queued marker says, if it has one.
func (c Client) waiting(ctx context.Context, id string) (Run, bool) {
	if c.State == nil {
		return Run{}, false
	}
	item, err := c.State.GetState(ctx, contract.StateStore, QueuedKey(id), nil)
	if err != nil || item == nil || len(item.Value) == 0 {
		return Run{}, false
	}
	var q Queued
	if json.Unmarshal(item.Value, &q) != nil {
		return Run{}, false
	}
	run := Run{ChatRun: contract.ChatRun{InstanceID: id, Status: contract.RunQueued, UserID: q.UserID, SessionID: q.SessionID}}
	if q.Cancelled {
		run.Status, run.Error = contract.RunTerminated, "the chat turn was stopped"
	}
	return run, true
}

// completed is the turn of its recorded result.
func completed(id string, r Result) Run {
	ev := r.Event
	run := Run{ChatRun: contract.ChatRun{InstanceID: id, Status: contract.RunCompleted, UserID: ev.UserID, SessionID: ev.SessionID}}
	run.Output = Output{UserID: ev.UserID, SessionID: ev.SessionID, Reply: ev.AssistantReply, Timestamp: ev.SentAt}
	run.Reply = &run.Output.Reply
	ts := ev.SentAt
	run.Timestamp = &ts
	return run
}

// Wait waits until the turn ends or ctx does (then it returns ctx's
// error, unwrapped); a turn that waits for its session is waited for
// until it starts.
//
// The engine's watch of a workflow is not all a wait relies on: in Dapr
// 1.18.2 a watch sometimes never hears of an end (seen in the cluster: a
// turn completed on another host a second after the watch began, and the
// watch went on until CHAT_TIMEOUT), and it never ends for a workflow the
// engine stalled. Each watch lasts at most WaitWindow; after it the turn
// is read (Get), and watched again while it runs.
func (c Client) Wait(ctx context.Context, id string) (Run, error) {
	for wait := 50 * time.Millisecond; ; wait = min(wait*2, time.Second) {
		run, ok := c.waiting(ctx, id)
		if ok && run.Status == contract.RunTerminated {
			return run, nil // cancelled while it waited
		}
		if !ok {
			break
		}
		if _, err := c.fetch(ctx, id); err == nil {
			break // started
		}
		select {
		case <-ctx.Done():
			return Run{}, ctx.Err()
		case <-time.After(wait):
		}
	}
	window := c.WaitWindow
	if window <= 0 {
		window = 5 * time.Second
	}
	nudgeAfter := c.NudgeAfter
	if nudgeAfter <= 0 {
		nudgeAfter = 10 * time.Second
	}
	var pending, nudged time.Time // since when the turn was seen PENDING; when it was nudged last
	for {
		wctx, cancel := context.WithTimeout(ctx, window)
		began := time.Now()
		meta, err := c.Workflows.WaitForWorkflowCompletion(wctx, id, workflow.WithFetchPayloads(true))
		windowEnded := wctx.Err() != nil
		cancel()
		if err == nil && meta != nil {
			return describe(id, meta), nil
		}
		if ctx.Err() != nil {
			return Run{}, ctx.Err()
		}
		// The window ended, or the watch failed: read the turn.
		run, gerr := c.Get(ctx, id)
		switch {
		case gerr == nil && run.Terminal():
			return run, nil
		case gerr == nil && run.Status == contract.RunPending:
			if pending.IsZero() {
				pending = began
			}
			if time.Since(pending) >= nudgeAfter && time.Since(nudged) >= nudgeAfter {
				c.nudge(ctx, id)
				nudged = time.Now()
			}
		case gerr != nil && !windowEnded: // the watch failed and so did the read
			if ctx.Err() != nil {
				return Run{}, ctx.Err()
			}
			return Run{}, gerr
		}
		if pause := time.Second - time.Since(began); pause > 0 && !windowEnded { // a watch that failed at once is not made again at once
			select {
			case <-ctx.Done():
				return Run{}, ctx.Err()
			case <-time.After(pause):
			}
		}
	}
}

// nudgeEvent is the event that nudges a turn's workflow; the workflow
// never waits for it (durabletask keeps an event nobody waits for).
const nudgeEvent = "nudge"

// nudge raises an event on turn id, whose workflow has stayed PENDING. Seen in a rolling restart with Dapr 1.18.2: a workflow
// created while its actor moved between replicas had its first run on the
// other replica before its state was saved ("No workflow state found for
// actor …, terminating execution"), which drops the reminder that starts
// it; its state (the start event in its inbox) stays, and nothing runs it.
// An event added to it sets a new reminder, and that run takes the whole
// inbox: the workflow starts. A workflow that has ended is never nudged
// (an event for an ended workflow with a patch in its history stalls it:
// settle).
func (c Client) nudge(ctx context.Context, id string) {
	log := logging.From(ctx, c.Log)
	if err := c.Workflows.RaiseEvent(ctx, id, nudgeEvent); err != nil {
		log.Warn("the turn's workflow has not started; it could not be nudged", "workflow_instance_id", id, "err", err)
		return
	}
	log.Warn("the turn's workflow had not started; nudged", "workflow_instance_id", id)
}

// settle ends a turn whose workflow Dapr stalled (run: STALLED). A stalled
// workflow runs no further until code with other patches is deployed, and
// a turn's code never changes under it, so the turn would hang for good,
// and its session's later turns behind it. In the cluster's fault rows
// Dapr 1.18.2 stalled workflows after a host's restart or a partition: a
// work item that reaches a workflow whose history holds a patch
// (PatchFewerSteps) and that brings no patches of its own — one for a
// workflow that has ended, "dropping work item" — reads as a patch
// mismatch (pkg/actors/targets/workflow/orchestrator/versioning.go). A
// workflow that had completed still reads COMPLETED; one stalled before
// its end reads STALLED. A turn whose result was recorded completed (its
// event is published); any other is recorded as stopped first — a round
// still running anywhere saves nothing — and fails with a message that
// says to send it again. A turn settled before (its stop recorded) is
// answered from that record alone: every read of it would otherwise write
// and terminate again.
func (c Client) settle(ctx context.Context, run Run) (Run, error) {
	id := run.InstanceID
	failed := func() (Run, error) {
		run.Status, run.Stage, run.Error = contract.RunFailed, "", stalledTurn
		return run, nil
	}
	if c.State != nil {
		if r, err := readResult(ctx, c.State, id); err == nil && r != nil {
			if !r.Stopped {
				return completed(id, *r), nil
			}
			return failed()
		}
	}
	r, err := c.stop(ctx, id, true)
	if err != nil {
		return Run{}, err
	}
	if r != nil {
		return completed(id, *r), nil
	}
	logging.From(ctx, c.Log).Warn("the turn's workflow stalled; the turn has failed", "workflow_instance_id", id)
	return failed()
}

// stalledTurn is a stalled turn's error (client-safe).
const stalledTurn = "the chat turn failed: its workflow stopped making progress; send the message again"

// recorded is the turn of its recorded result when its workflow cannot be
// read (err): the turn completed, whatever became of the workflow's own
// state. Seen after a partition healed: Dapr 1.18.2's save of a workflow
// that had just completed failed halfway (a stale ETag inside the Redis
// state store's transaction script), and its state could no longer be
// loaded ("inbox key … declared in metadata but missing from state
// store", every read failing) although the turn had completed and
// published its event.
func (c Client) recorded(ctx context.Context, id string, err error) (Run, bool) {
	if c.State == nil {
		return Run{}, false
	}
	r, rerr := readResult(ctx, c.State, id)
	if rerr != nil || r == nil || r.Stopped {
		return Run{}, false
	}
	logging.From(ctx, c.Log).Warn("the turn's workflow cannot be read; answering the result it recorded", "workflow_instance_id", id, "err", err)
	return completed(id, *r), true
}

// Cancel stops a running turn (Dapr's terminate) and returns its state:
// TERMINATED, or the state it had already ended in (a repeat is harmless).
// What the turn had not published yet never reaches the history.
func (c Client) Cancel(ctx context.Context, id string) (Run, error) {
	run, err := c.Get(ctx, id)
	if err != nil || run.Status.Terminal() {
		return run, err
	}
	r, err := c.stop(ctx, id, false)
	if err != nil {
		return Run{}, err
	}
	if r != nil { // saved just before: it completed
		return completed(id, *r), nil
	}
	logging.From(ctx, c.Log).Info("chat turn stopped", "workflow_instance_id", id)
	// Terminate returns before the engine has recorded it: wait (briefly)
	// for the end, so the answer says TERMINATED.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if run, err := c.Wait(wctx, id); err == nil {
		return run, nil
	}
	return c.Get(ctx, id)
}

// notFound reports an unknown instance: the engine's error, or its text as
// it crossed the sidecar.
func notFound(err error) bool {
	if errors.Is(err, api.ErrInstanceNotFound) {
		return true
	}
	m := strings.ToLower(err.Error())
	return strings.Contains(m, "not found") || strings.Contains(m, "no such instance")
}

// fetch reads a turn's workflow metadata. Read right after the turn was
// scheduled, Dapr 1.18.2 sometimes fails with "inbox key … declared in
// metadata but missing from state store" while the workflow's first state
// is being saved: such a read is tried again, briefly.
func (c Client) fetch(ctx context.Context, id string) (*workflow.WorkflowMetadata, error) {
	var err error
	for attempt, wait := 0, 20*time.Millisecond; attempt < 5; attempt, wait = attempt+1, wait*2 {
		var meta *workflow.WorkflowMetadata
		if meta, err = c.Workflows.FetchWorkflowMetadata(ctx, id, workflow.WithFetchPayloads(true)); err == nil || notFound(err) {
			return meta, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
	return nil, err
}

// describe is the turn of its workflow's metadata.
func describe(id string, meta *workflow.WorkflowMetadata) Run {
	run := Run{ChatRun: contract.ChatRun{InstanceID: id, Status: contract.RunStatus(meta.String())}}
	if meta.CustomStatus != nil && run.Status == contract.RunRunning {
		run.Stage = meta.CustomStatus.GetValue()
		if strings.HasPrefix(run.Stage, contract.StageApproval+":") {
			run.Status = contract.RunAwaitingApproval
		}
	}
	var in Input
	if meta.Input != nil && json.Unmarshal([]byte(meta.Input.GetValue()), &in) == nil {
		run.UserID, run.SessionID = in.UserID, in.SessionID
	}
	switch run.Status {
	case contract.RunCompleted:
		if meta.Output != nil && json.Unmarshal([]byte(meta.Output.GetValue()), &run.Output) == nil {
			run.Reply = &run.Output.Reply
			ts := run.Output.Timestamp
			run.Timestamp = &ts
		}
	case contract.RunFailed:
		run.Error = "the chat turn failed"
		if fd := meta.FailureDetails; fd != nil && strings.HasPrefix(fd.ErrorMessage, "chat turn failed") {
			run.Error = fd.ErrorMessage // our own, client-safe message
		}
	case contract.RunTerminated, contract.RunCanceled:
		run.Error = "the chat turn was stopped"
	}
	return run
}
