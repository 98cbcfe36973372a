package turn

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dapr/durabletask-go/workflow"

	"github.com/daca-go/daca/internal/dev/testkit"
)

// stuckEngine is a workflow engine whose warm-ups never complete until the
// worker has been connected again `heals` times (heals < 0: never).
type stuckEngine struct {
	mu         sync.Mutex
	heals      int
	reconnects int
	scheduled  int
	purged     int
}

func (e *stuckEngine) ScheduleWorkflow(ctx context.Context, _ string, _ ...workflow.NewWorkflowOptions) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.scheduled++
	return "id", nil
}

func (e *stuckEngine) WaitForWorkflowCompletion(ctx context.Context, _ string, _ ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error) {
	e.mu.Lock()
	ok := e.heals >= 0 && e.reconnects >= e.heals
	e.mu.Unlock()
	if ok {
		return &workflow.WorkflowMetadata{RuntimeStatus: workflow.StatusCompleted}, nil
	}
	<-ctx.Done() // the actor type is not registered: the warm-up never runs
	return nil, ctx.Err()
}

func (e *stuckEngine) TerminateWorkflow(context.Context, string, ...workflow.TerminateOptions) error {
	return nil
}

func (e *stuckEngine) PurgeWorkflowState(context.Context, string, ...workflow.PurgeOptions) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.purged++
	return nil
}

func (e *stuckEngine) reconnect(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reconnects++
	return nil
}

func TestWarmupConnectsTheWorkerAgainWhileTheEngineIsStuck(t *testing.T) {
	tests := []struct {
		name           string
		heals          int  // reconnects that make the engine work; -1: none
		noReconnect    bool // Warmup gets no reconnect function
		timeout        time.Duration
		wantErr        bool
		wantAttempts   int
		wantReconnects int
	}{
		{name: "ready at once", heals: 0, timeout: 5 * time.Second, wantAttempts: 1},
		{name: "stuck until the worker reconnects", heals: 1, timeout: 5 * time.Second,
			wantAttempts: ReconnectAfter + 1, wantReconnects: 1},
		{name: "stuck until it reconnects twice", heals: 2, timeout: 5 * time.Second,
			wantAttempts: 2*ReconnectAfter + 1, wantReconnects: 2},
		{name: "never ready: gives up when its time is out", heals: -1, timeout: 300 * time.Millisecond, wantErr: true},
		{name: "no reconnect function: tries the same worker until its time is out", heals: 1, noReconnect: true,
			timeout: 300 * time.Millisecond, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &stuckEngine{heals: tt.heals}
			ctx, cancel := context.WithTimeout(t.Context(), tt.timeout)
			defer cancel()
			reconnect := e.reconnect
			if tt.noReconnect {
				reconnect = nil
			}
			err := Warmup(ctx, e, 20*time.Millisecond, reconnect, testkit.Quiet())
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want an error: %v", err, tt.wantErr)
			}
			if tt.wantErr {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("err %v, want the deadline's", err)
				}
				if tt.noReconnect && e.reconnects != 0 {
					t.Errorf("%d reconnects without a reconnect function", e.reconnects)
				}
				return
			}
			if e.scheduled != tt.wantAttempts || e.reconnects != tt.wantReconnects || e.purged != e.scheduled {
				t.Errorf("%d attempts, %d reconnects, %d purged; want %d attempts, %d reconnects, every warm-up purged",
					e.scheduled, e.reconnects, e.purged, tt.wantAttempts, tt.wantReconnects)
			}
		})
	}
}
