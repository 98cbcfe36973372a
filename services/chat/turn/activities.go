package turn

import (
	"context"
	"errors"
	"log/slog"
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

// Model generates replies, streamed piece by piece (llm.Client.Stream).
type Model interface {
	Stream(ctx context.Context, system string, history []llm.Message, user string, on func(llm.Piece)) (string, error)
}

// Activities holds what the activities need.
type Activities struct {
	// Memory is agent-memory-service, through the sidecar.
	Memory    api.Memory
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
	c := Recalled{Profile: contract.DefaultProfile(in.UserID), History: []contract.Entry{}}
	cctx, cancel := context.WithTimeout(sctx, 10*time.Second)
	defer cancel()
	// The profile and the session's last entries, read at once; the history
	// only of a session the turn's user owns (the memory answers an empty
	// one otherwise).
	var profile contract.Profile
	var history []contract.Entry
	var perr, herr error
	var wg sync.WaitGroup
	wg.Go(func() { profile, perr = a.Memory.Profile(cctx, in.UserID) })
	wg.Go(func() {
		history, herr = a.Memory.History(cctx, in.SessionID, api.HistoryOptions{Last: contract.ContextEntries, UserID: in.UserID})
	})
	wg.Wait()
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
	if len(c.History) > contract.ContextEntries {
		c.History = c.History[len(c.History)-contract.ContextEntries:]
	}
	return c, nil
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
