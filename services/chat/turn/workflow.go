// Package turn runs a chat turn as the Dapr Workflow chat_workflow:
// fetch_context (profile and recent history from agent-memory-service by
// service invocation) → generate_response (the LLM with its tool loop) →
// save_conversation (publish ConversationUpdated, CloudEvent id = workflow
// instance id). On failure handle_error records it and the workflow ends
// failed with a clear, client-safe error.
//
// The workflow function is deterministic: no I/O, no clock but the
// workflow's own, no randomness. All I/O lives in activities, each with an
// explicit retry policy.
package turn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dapr/durabletask-go/workflow"
	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/llm"
	"github.com/daca-go/daca/internal/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
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

// Context is what fetch_context returns.
type Context struct {
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
	Context    Context           `json:"context"`
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
	var c Context
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

// Invoker calls other apps through the sidecar's HTTP API (daprc.HTTP).
type Invoker interface {
	Invoke(ctx context.Context, app, method, verb string, body []byte, header http.Header) (int, []byte, error)
}

// Publisher publishes through the sidecar.
type Publisher interface {
	PublishEvent(ctx context.Context, pubsubName, topicName string, data interface{}, opts ...dapr.PublishEventOption) error
}

// Model generates replies, streamed piece by piece (llm.Client.Stream).
type Model interface {
	Stream(ctx context.Context, system string, history []llm.Message, user string, on func(llm.Piece)) (string, error)
}

// Activities holds what the activities need.
type Activities struct {
	Invoker   Invoker
	Publisher Publisher
	Model     Model
	// State counts the executions of generate_response of a turn, which
	// number the streamed pieces; nil: the reply is not streamed.
	State State
	Log   *slog.Logger
	// Failpoint, when set, is called at the named points of the activities
	// ("fetch_context", "after_publish") for the fault suite to crash the
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
	a.failpoint("fetch_context")
	sctx, sp := span(ctx, ActFetchContext, in.InstanceID, in.Trace)
	defer sp.End()
	log := a.logger(ctx, ActFetchContext, in.InstanceID).With("user_id", in.UserID, "session_id", in.SessionID, "trace_id", telemetry.TraceID(sctx))
	c := Context{Profile: contract.DefaultProfile(in.UserID), History: []contract.Entry{}}
	cctx, cancel := context.WithTimeout(sctx, 10*time.Second)
	defer cancel()
	// The profile and the session's last entries, read at once; the history
	// only of a session the turn's user owns (the memory answers an empty
	// one otherwise).
	var profile, history []byte
	var perr, herr error
	var wg sync.WaitGroup
	wg.Go(func() { profile, perr = a.get(cctx, "memories/"+in.UserID) })
	wg.Go(func() {
		history, herr = a.get(cctx, "conversations/"+in.SessionID+"?last="+strconv.Itoa(contract.ContextEntries)+"&user_id="+url.QueryEscape(in.UserID))
	})
	wg.Wait()
	if perr != nil {
		log.Warn("memory unreachable; using the default profile", "err", perr)
		c.Degraded = true
	} else if err := json.Unmarshal(profile, &c.Profile); err != nil {
		log.Warn("memory answered an unreadable profile; using the default", "err", err)
		c.Profile, c.Degraded = contract.DefaultProfile(in.UserID), true
	}
	if herr != nil {
		log.Warn("memory unreachable; continuing without history", "err", herr)
		c.Degraded = true
	} else {
		var h contract.HistoryReply
		if err := json.Unmarshal(history, &h); err == nil && h.History != nil {
			c.History = h.History
		}
	}
	if len(c.History) > contract.ContextEntries {
		c.History = c.History[len(c.History)-contract.ContextEntries:]
	}
	return c, nil
}

// get reads method of the memory service; an answer other than 200 is an
// error.
func (a *Activities) get(ctx context.Context, method string) ([]byte, error) {
	status, out, err := a.Invoker.Invoke(ctx, contract.MemoryApp, method, http.MethodGet, nil, nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d: %.200s", strings.SplitN(method, "?", 2)[0], status, out)
	}
	return out, nil
}

// GenerateResponse asks the LLM for the reply and streams it on
// contract.TopicChatStream as it is written.
func (a *Activities) GenerateResponse(ctx workflow.ActivityContext) (any, error) {
	var in generateInput
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	p := in.Context.Profile
	hist := make([]llm.Message, 0, len(in.Context.History))
	for _, e := range in.Context.History {
		hist = append(hist, llm.Message{Role: e.Role, Content: e.Content})
	}
	sctx, sp := span(ctx, ActGenerate, in.InstanceID, in.Trace)
	defer sp.End()
	start := time.Now()
	log := a.logger(ctx, ActGenerate, in.InstanceID).With("trace_id", telemetry.TraceID(sctx))
	var on func(llm.Piece)
	if a.State != nil {
		st := newStreamer(sctx, a.Publisher, log, in.InstanceID, in.UserID, func(ctx context.Context) (int, error) {
			return nextExecution(ctx, a.State, in.InstanceID)
		})
		defer st.close()
		on = st.on
	}
	reply, err := a.Model.Stream(sctx, llm.ChatInstructions(p.Name, p.PreferredStyle, p.UserSummary), hist, in.Text, on)
	if err != nil {
		sp.SetStatus(codes.Error, "LLM failed")
		log.Error("LLM failed", "code", apperr.CodeOf(err), "err", err)
		return nil, err
	}
	log.Info("reply generated", "duration_ms", time.Since(start).Milliseconds(), "history_entries", len(hist))
	return reply, nil
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
	pctx, cancel := context.WithTimeout(sctx, 10*time.Second)
	defer cancel()
	if err := a.Publisher.PublishEvent(pctx, contract.PubSub, contract.TopicConversations, in.Event,
		dapr.PublishEventWithMetadata(map[string]string{contract.CloudEventIDMetadata: in.EventID})); err != nil {
		a.logger(ctx, ActSave, in.EventID).Error("publish ConversationUpdated failed", "err", err)
		return nil, err
	}
	a.failpoint("after_publish") // the window where a crash makes the publish repeat
	a.logger(ctx, ActSave, in.EventID).Info("ConversationUpdated published", "cloudevent_id", in.EventID, "session_id", in.Event.SessionID, "trace_id", telemetry.TraceID(sctx))
	return nil, nil
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
	return nil, nil
}
