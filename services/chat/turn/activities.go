package turn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dapr/durabletask-go/workflow"
	dapr "github.com/dapr/go-sdk/client"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/llm"
	"github.com/daca-go/daca/internal/telemetry"
)

// The activities of chat_workflow: all of a turn's I/O.

// Publisher publishes through the sidecar.
type Publisher interface {
	PublishEvent(ctx context.Context, pubsubName, topicName string, data interface{}, opts ...dapr.PublishEventOption) error
}

// Model answers one round of a turn, its text streamed piece by piece
// (llm.Client.Round).
type Model interface {
	Round(ctx context.Context, system string, msgs []llm.Message, tools []llm.ToolSpec, on func(string)) (llm.Answer, error)
}

// Tools lists the tools offered to the model (Catalog).
type Tools interface {
	Tools(ctx context.Context) []Tool
}

// Sessions hands a session on when its turn ends (session.Client): the
// next turn that waits starts.
type Sessions interface {
	Done(ctx context.Context, session, id string) error
}

// Approvals keeps the requests of calls that wait for a decision
// (approval.Store).
type Approvals interface {
	Request(ctx context.Context, a contract.Approval) (contract.Approval, error)
	Expire(ctx context.Context, id string) (contract.Approval, error)
}

// Activities holds what the activities need.
type Activities struct {
	// Memory is agent-memory-service, through the sidecar.
	Memory    api.Memory
	Publisher Publisher
	Model     Model
	// Tools are the tools offered to the model; nil: the built-in one only.
	Tools Tools
	// Approvals records the requests of calls that wait for a decision.
	Approvals Approvals
	// Sessions is told when a turn ends; nil: nobody.
	Sessions Sessions
	// Stop ends a workflow (an MCP call past its deadline); nil: none is.
	Stop func(ctx context.Context, id string) error
	// Now is the built-in tool's clock; nil: time.Now.
	Now func() time.Time
	// State counts the executions of generate_response of a turn, which
	// number the streamed pieces; nil: the reply is not streamed.
	State State
	Log   *slog.Logger
	// Failpoint, when set, is called at the named points of the activities
	// ("fetch_context", "after_tool", "after_publish") for the fault suite to crash the
	// process exactly there (FAILPOINTS_DIR); nil in production.
	Failpoint func(name string)
}

func (a *Activities) failpoint(name string) {
	if a.Failpoint != nil {
		a.Failpoint(name)
	}
}

// Register adds the workflow and its activities to r.
func (a *Activities) Register(r *workflow.Registry) error {
	return errors.Join(
		r.AddWorkflowN(WorkflowName, Workflow),
		r.AddActivityN(ActFetchContext, a.FetchContext),
		r.AddActivityN(ActGenerate, a.GenerateResponse),
		r.AddActivityN(ActSave, a.SaveConversation),
		r.AddActivityN(ActHandleError, a.HandleError),
		r.AddActivityN(ActRequestApproval, a.RequestApproval),
		r.AddActivityN(ActExpireApproval, a.ExpireApproval),
		r.AddActivityN(ActToolDeadline, a.ToolDeadline),
		r.AddActivityN(ActRunTool, a.RunTool),
	)
}

func (a *Activities) logger(ctx workflow.ActivityContext, activity, instanceID string) *slog.Logger {
	return a.Log.With("workflow_instance_id", instanceID, "activity", activity, "task_execution_id", ctx.GetTaskExecutionID())
}

// span continues the turn's trace in an activity.
func span(actx workflow.ActivityContext, activity, instanceID string, carrier map[string]string) (context.Context, trace.Span) {
	ctx := telemetry.FromCarrier(actx.Context(), carrier)
	return telemetry.Start(ctx, "activity "+activity,
		attribute.String("workflow.instance_id", instanceID), attribute.String("workflow.activity", activity))
}

// FetchContext reads the user's profile and the session's recent history
// from agent-memory-service. When memory cannot be reached it answers with
// the defaults (the turn goes on) and says so in the log.
func (a *Activities) FetchContext(ctx workflow.ActivityContext) (any, error) {
	var in fetchInput
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	sctx, sp := span(ctx, ActFetchContext, in.InstanceID, in.Trace)
	defer sp.End()
	return a.recall(sctx, a.logger(ctx, ActFetchContext, in.InstanceID), in), nil
}

// recall is what FetchContext answers (also the first round of a turn
// under PatchFewerSteps).
func (a *Activities) recall(ctx context.Context, log *slog.Logger, in fetchInput) Recalled {
	a.failpoint("fetch_context")
	log = log.With("user_id", in.UserID, "session_id", in.SessionID, "trace_id", telemetry.TraceID(ctx))
	c := Recalled{Profile: contract.DefaultProfile(in.UserID), History: []contract.Entry{}}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The profile and the session's last entries in one call; the history
	// only of a session the turn's user owns (the memory answers an empty
	// one otherwise). A memory service without the call (an older one,
	// during an upgrade) answers NotFound: then two calls, at once.
	var profile contract.Profile
	var history []contract.Entry
	var perr, herr error
	got, err := a.Memory.Context(cctx, in.UserID, in.SessionID, contract.ContextEntries)
	if apperr.CodeOf(err) == apperr.NotFound {
		var wg sync.WaitGroup
		wg.Go(func() { profile, perr = a.Memory.Profile(cctx, in.UserID) })
		wg.Go(func() {
			history, herr = a.Memory.History(cctx, in.SessionID, api.HistoryOptions{Last: contract.ContextEntries, UserID: in.UserID})
		})
		wg.Wait()
	} else {
		profile, history, perr, herr = got.Profile, got.History, err, err
	}
	if perr != nil {
		log.Warn("memory unreachable; using the default profile", "err", perr)
		c.Degraded = true
	} else {
		c.Profile = profile
	}
	if herr != nil {
		log.Warn("memory unreachable; continuing without history", "err", herr)
		c.Degraded = true
	} else if history != nil {
		c.History = history
	}
	// The session's turns before this one that the memory has not applied
	// yet (their events are on their way): from their results.
	if in.After != "" && herr == nil && a.State != nil {
		h, err := recent(cctx, a.State, c.History, in.After)
		if err != nil {
			log.Warn("the session's latest turns could not be read; the prompt may lack them", "err", err)
		} else if len(h) != len(c.History) {
			log.Info("the prompt has the session's latest turns from their results (the memory had not applied them yet)", "entries", len(h)-len(c.History))
			c.History = h
		}
	}
	if len(c.History) > contract.ContextEntries {
		c.History = c.History[len(c.History)-contract.ContextEntries:]
	}
	return c
}

// GenerateResponse is one round of the model: the conversation so far
// (history, the user's message, the turn's earlier rounds with their tools'
// results) with the tools it may call. Its text is streamed on
// contract.TopicChatStream as it is written, after the reply so far; the
// earlier round's tool results and this round's calls go out as pieces of
// their own. The calls come back resolved (Prepare): the workflow runs each
// as a step of its own.
func (a *Activities) GenerateResponse(ctx workflow.ActivityContext) (any, error) {
	var in generateInput
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	if len(in.Steps) > 0 {
		a.failpoint("after_tool") // the turn's tool calls have completed; their results are in its history
	}
	sctx, sp := span(ctx, ActGenerate, in.InstanceID, in.Trace)
	defer sp.End()
	start := time.Now()
	log := a.logger(ctx, ActGenerate, in.InstanceID).With("trace_id", telemetry.TraceID(sctx), "round", len(in.Steps)+1)
	if in.Fetch != nil {
		in.Context = a.recall(sctx, log, *in.Fetch)
	}
	p := in.Context.Profile
	msgs := make([]llm.Message, 0, len(in.Context.History)+1+2*len(in.Steps))
	for _, e := range in.Context.History {
		msgs = append(msgs, llm.Message{Role: e.Role, Content: e.Content})
	}
	msgs = append(msgs, llm.Message{Role: contract.RoleUser, Content: in.Text})
	var soFar strings.Builder
	for _, st := range in.Steps {
		soFar.WriteString(st.Text)
		am := llm.Message{Role: contract.RoleAssistant, Content: st.Text}
		for _, c := range st.Calls {
			am.ToolCalls = append(am.ToolCalls, llm.ToolCall{ID: c.ID, Name: c.Name, Arguments: c.Arguments})
		}
		msgs = append(msgs, am)
		for _, c := range st.Calls {
			msgs = append(msgs, llm.Message{Role: llm.RoleTool, Content: c.Result, ToolCallID: c.ID, Name: c.Name})
		}
	}
	tools := []Tool{Builtin}
	if a.Tools != nil {
		tools = a.Tools.Tools(sctx)
	}
	var on func(string)
	var st *streamer
	if a.State != nil {
		st = newStreamer(sctx, a.Publisher, log, in.InstanceID, in.UserID, soFar.String(), func(ctx context.Context) (int, error) {
			return nextExecution(ctx, a.State, in.InstanceID, len(in.Steps) == 0)
		})
		defer st.close()
		if n := len(in.Steps); n > 0 {
			for _, c := range in.Steps[n-1].Calls {
				st.tool(c)
			}
		}
		on = st.text
	}
	ans, err := a.Model.Round(sctx, llm.ChatInstructions(p.Name, p.PreferredStyle, p.UserSummary), msgs, Specs(tools), on)
	if err != nil {
		sp.SetStatus(codes.Error, "LLM failed")
		log.Error("LLM failed", "code", apperr.CodeOf(err), "err", err)
		return nil, err
	}
	out := Round{Text: ans.Text, Usage: contract.Usage{PromptTokens: ans.Usage.PromptTokens, CompletionTokens: ans.Usage.CompletionTokens, LLMCalls: 1}}
	for i, tc := range ans.ToolCalls {
		c := Prepare(tools, tc, in.UserID, CallID(in.InstanceID, len(in.Steps)+1, i+1))
		out.Calls = append(out.Calls, c)
		if st != nil {
			st.tool(c)
		}
	}
	log.Info("model answered", "duration_ms", time.Since(start).Milliseconds(), "history_entries", len(in.Context.History), "tool_calls", len(out.Calls))
	if in.Fetch != nil {
		out.Context = &in.Context
	}
	if len(out.Calls) == 0 && in.Save != nil {
		// The reply's pieces go out before its event: a reader sees the
		// event last, as when saving was a step of its own.
		if st != nil {
			st.close()
			st.wait()
		}
		ev := contract.NewConversationUpdated(in.UserID, in.Save.SessionID, in.Text, soFar.String()+ans.Text)
		ev.SentAt = time.Now().UTC()
		use := out.Usage
		for _, st := range in.Steps {
			for _, c := range st.Calls {
				ev.ToolCalls = append(ev.ToolCalls, c.Wire())
			}
			use = use.Plus(st.Usage)
		}
		ev.Usage = &use
		saved, err := a.save(ctx, sctx, ActGenerate, Result{ID: in.InstanceID, After: in.Save.After, Event: ev}, true)
		if err != nil {
			sp.SetStatus(codes.Error, errSaving)
			return nil, fmt.Errorf("%s: %w", errSaving, err)
		}
		// The reply saved by an earlier execution stands (save).
		out.Text = strings.TrimPrefix(saved.Event.AssistantReply, soFar.String())
		out.Saved = true
	}
	return out, nil
}

// errSaving marks the error of a last round whose reply could not be saved
// (the workflow fails "while saving").
const errSaving = "saving the turn failed"

// RunTool runs the built-in tool (get_current_time). Its result is not
// logged at info level (no tool's is).
func (a *Activities) RunTool(ctx workflow.ActivityContext) (any, error) {
	var in toolInput
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	_, sp := span(ctx, ActRunTool, in.InstanceID, in.Trace)
	defer sp.End()
	if in.Call.Tool != Builtin.Tool {
		return "error: unknown built-in tool " + in.Call.Tool, nil
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	a.logger(ctx, ActRunTool, in.InstanceID).Debug("built-in tool called", "tool", in.Call.Tool)
	return now().UTC().Format(llm.TimeFormat), nil
}

// RequestApproval records the request of a call that waits for a
// decision and announces it (contract.TopicApprovals); run again, it
// answers the request as it stands (perhaps decided already).
func (a *Activities) RequestApproval(ctx workflow.ActivityContext) (any, error) {
	var in approvalInput
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	sctx, sp := span(ctx, ActRequestApproval, in.Approval.InstanceID, in.Trace)
	defer sp.End()
	out, err := a.Approvals.Request(sctx, in.Approval)
	if err != nil {
		a.logger(ctx, ActRequestApproval, in.Approval.InstanceID).Error("approval request failed", "approval_id", in.Approval.ID, "err", err)
		return nil, err
	}
	a.logger(ctx, ActRequestApproval, in.Approval.InstanceID).Info("tool call waits for approval", "approval_id", out.ID,
		"tool", out.Server+"/"+out.Tool, "status", out.Status, "expires_at", out.ExpiresAt)
	return out, nil
}

// ExpireApproval ends a wait that saw no decision: the request expires,
// unless its record has a decision (or a stopped turn) already, which is
// answered instead.
func (a *Activities) ExpireApproval(ctx workflow.ActivityContext) (any, error) {
	var in approvalInput
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	sctx, sp := span(ctx, ActExpireApproval, in.Approval.InstanceID, in.Trace)
	defer sp.End()
	out, err := a.Approvals.Expire(sctx, in.Approval.ID)
	if err != nil {
		return nil, err
	}
	a.logger(ctx, ActExpireApproval, in.Approval.InstanceID).Info("approval wait ended", "approval_id", out.ID, "status", out.Status)
	return out, nil
}

// ToolDeadline waits for an MCP call's deadline, then stops the call's
// workflow (a call that ended already is left as it is). After a restart
// of chat-service it waits the whole timeout again: a deadline is at least
// the timeout.
func (a *Activities) ToolDeadline(ctx workflow.ActivityContext) (any, error) {
	var in deadlineInput
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	select {
	case <-ctx.Context().Done():
		return nil, ctx.Context().Err()
	case <-time.After(in.After):
	}
	if a.Stop == nil {
		return nil, nil
	}
	if err := a.Stop(ctx.Context(), in.CallID); err != nil {
		return nil, err
	}
	a.logger(ctx, ActToolDeadline, in.CallID).Debug("tool call deadline passed", "after", in.After.String())
	return nil, nil
}

// SaveConversation publishes ConversationUpdated with the workflow instance
// id as CloudEvent id, so a retried publish is applied once by the memory.
func (a *Activities) SaveConversation(ctx workflow.ActivityContext) (any, error) {
	var in saveInput
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	sctx, sp := span(ctx, ActSave, in.EventID, in.Trace)
	defer sp.End()
	_, err := a.save(ctx, sctx, ActSave, Result{ID: in.EventID, After: in.After, Event: in.Event}, false)
	return nil, err
}

// save records a turn's result, publishes its event and hands its session
// on. once: the first result recorded stands — a last round run again
// (a retry, a crash after the save) publishes the reply saved before, not
// the one it wrote itself, so the memory, the result and the event agree.
// It answers the Result that stands.
func (a *Activities) save(actx workflow.ActivityContext, ctx context.Context, activity string, res Result, once bool) (Result, error) {
	log := a.logger(actx, activity, res.ID)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The turn's result, before its event: a reader that saw the event (a
	// chatStream's last chunk) finds the turn COMPLETED on every replica,
	// and the session's next turn has it even before the memory applied
	// the event (FetchContext).
	if a.State != nil {
		saved, err := saveResult(pctx, a.State, res, once)
		if err != nil {
			log.Error("saving the turn's result failed", "err", err)
			return res, err
		}
		if saved.Event.AssistantReply != res.Event.AssistantReply {
			log.Info("the turn's reply was saved by an earlier execution; publishing that one")
		}
		if saved.Stopped {
			log.Info("the turn was stopped before its reply was saved; nothing published")
			return saved, errStopped
		}
		res = saved
	}
	if err := a.Publisher.PublishEvent(pctx, contract.PubSub, contract.TopicConversations, res.Event,
		dapr.PublishEventWithMetadata(map[string]string{contract.CloudEventIDMetadata: res.ID})); err != nil {
		log.Error("publish ConversationUpdated failed", "err", err)
		return res, err
	}
	a.failpoint("after_publish") // the window where a crash makes the publish repeat
	log.Info("ConversationUpdated published", "cloudevent_id", res.ID, "session_id", res.Event.SessionID, "trace_id", telemetry.TraceID(ctx))
	a.release(actx, ctx, activity, res.Event.SessionID, res.ID)
	return res, nil
}

// release hands the session on to its next waiting turn. Best effort: when
// it fails, the session's reminder notices the turn's end.
func (a *Activities) release(actx workflow.ActivityContext, ctx context.Context, activity, session, id string) {
	if a.Sessions == nil || session == "" {
		return
	}
	if err := a.Sessions.Done(ctx, session, id); err != nil {
		a.logger(actx, activity, id).Warn("the session could not be handed on now; its reminder will", "session_id", session, "err", err)
	}
}

// HandleError records a failed turn.
func (a *Activities) HandleError(ctx workflow.ActivityContext) (any, error) {
	var in errorInput
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	sctx, sp := span(ctx, ActHandleError, in.InstanceID, in.Trace)
	defer sp.End()
	sp.SetStatus(codes.Error, "chat turn failed while "+in.Stage)
	a.logger(ctx, ActHandleError, in.InstanceID).Error("chat turn failed", "stage", in.Stage, "err", llm.Redact(in.Error), "trace_id", telemetry.TraceID(sctx))
	a.release(ctx, sctx, ActHandleError, in.SessionID, in.InstanceID)
	return nil, nil
}
