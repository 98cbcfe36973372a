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
func Warmup(ctx context.Context, c WarmupClient, perTry time.Duration, log *slog.Logger) error {
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
	}
}
