package turn

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/dapr/durabletask-go/workflow"
	"github.com/google/uuid"
)

// Names of the warm-up workflow and its activity.
const (
	WarmupWorkflow = "warmup_workflow"
	WarmupActivity = "warmup_ping"
)

// WarmupClient is the part of the workflow client the warm-up uses.
type WarmupClient interface {
	ScheduleWorkflow(ctx context.Context, orchestrator string, opts ...workflow.NewWorkflowOptions) (string, error)
	WaitForWorkflowCompletion(ctx context.Context, id string, opts ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error)
	TerminateWorkflow(ctx context.Context, id string, opts ...workflow.TerminateOptions) error
	PurgeWorkflowState(ctx context.Context, id string, opts ...workflow.PurgeOptions) error
}

// RegisterWarmup adds the warm-up workflow: one activity, nothing else.
func RegisterWarmup(r *workflow.Registry) error {
	if err := r.AddActivityN(WarmupActivity, func(workflow.ActivityContext) (any, error) { return "pong", nil }); err != nil {
		return err
	}
	return r.AddWorkflowN(WarmupWorkflow, func(ctx *workflow.WorkflowContext) (any, error) {
		var out string
		err := ctx.CallActivity(WarmupActivity, workflow.WithActivityRetryPolicy(&workflow.RetryPolicy{
			MaxAttempts: 3, InitialRetryInterval: 100 * time.Millisecond, BackoffCoefficient: 2,
		})).Await(&out)
		return out, err
	})
}

// Warmup runs the warm-up workflow until one completes, so the service only
// reports ready once the workflow engine really runs workflows and
// activities (the sidecar connects to placement and takes in the app's
// actor types after the worker connects). A warm-up that does not complete
// in perTry is terminated and tried again.
//
// After every ReconnectAfter failed attempts in a row, reconnect (when not
// nil) connects the worker again: Dapr 1.18.2 sometimes never takes in the
// actor types of a worker that connects while the sidecar is still
// dropping those of the app's previous process ("actor type
// dapr.internal.default.chat-service.workflow not registered" for as long
// as the new worker stays connected; seen when the app was killed mid-load
// and restarted within a second).
func Warmup(ctx context.Context, c WarmupClient, perTry time.Duration, reconnect func(context.Context) error, log *slog.Logger) error {
	for attempt := 1; ; attempt++ {
		id := "warmup-" + uuid.NewString()
		err := func() error {
			tctx, cancel := context.WithTimeout(ctx, perTry)
			defer cancel()
			if _, err := c.ScheduleWorkflow(tctx, WarmupWorkflow, workflow.WithInstanceID(id)); err != nil {
				return err
			}
			meta, err := c.WaitForWorkflowCompletion(tctx, id)
			if err != nil {
				return err
			}
			if meta.RuntimeStatus != workflow.StatusCompleted {
				return fmt.Errorf("warm-up workflow ended %s", meta.String())
			}
			return nil
		}()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err != nil {
			_ = c.TerminateWorkflow(cctx, id)
		}
		_ = c.PurgeWorkflowState(cctx, id)
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Info("workflow engine warmed up", "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("workflow engine not ready: %w", ctx.Err())
		}
		log.Warn("workflow warm-up did not complete; trying again", "attempt", attempt, "err", err)
		if reconnect != nil && attempt%ReconnectAfter == 0 {
			log.Warn("workflow engine still not ready: connecting the workflow worker again", "attempts", attempt)
			if err := reconnect(ctx); err != nil {
				return fmt.Errorf("workflow engine not ready: reconnecting the worker: %w", err)
			}
		}
	}
}

// ReconnectAfter is how many failed warm-ups in a row make Warmup connect
// the worker again.
const ReconnectAfter = 3
