package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dapr/durabletask-go/workflow"
)

// engine is a workflow engine that runs the warm-up (ok) or never does.
type engine struct{ ok bool }

func (e engine) ScheduleWorkflow(ctx context.Context, _ string, _ ...workflow.NewWorkflowOptions) (string, error) {
	return "w", nil
}

func (e engine) WaitForWorkflowCompletion(ctx context.Context, _ string, _ ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error) {
	if e.ok {
		return &workflow.WorkflowMetadata{RuntimeStatus: workflow.StatusCompleted}, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (engine) TerminateWorkflow(context.Context, string, ...workflow.TerminateOptions) error {
	return nil
}
func (engine) PurgeWorkflowState(context.Context, string, ...workflow.PurgeOptions) error { return nil }

type sidecar struct{ shutdowns atomic.Int32 }

func (s *sidecar) Shutdown(context.Context) error { s.shutdowns.Add(1); return nil }

func TestWarmUpShutsAStuckSidecarDown(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name         string
		engine       engine
		stuck        bool // the failpoint fires
		stopped      bool // the process is being stopped meanwhile
		wantErr      bool
		wantShutdown int32
	}{
		{name: "a workflow runs: ready", engine: engine{ok: true}},
		{name: "none runs in time: the sidecar is shut down", engine: engine{}, wantErr: true, wantShutdown: 1},
		{name: "the failpoint acts stuck", engine: engine{ok: true}, stuck: true, wantErr: true, wantShutdown: 1},
		{name: "the process stops meanwhile: the sidecar is left alone", engine: engine{}, stopped: true, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tc.stopped {
				cancel()
			}
			sc := &sidecar{}
			err := warmUp(ctx, tc.engine, sc, 300*time.Millisecond, func() bool { return tc.stuck }, log)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v; want an error: %v", err, tc.wantErr)
			}
			if n := sc.shutdowns.Load(); n != tc.wantShutdown {
				t.Fatalf("%d shutdowns of the sidecar; want %d", n, tc.wantShutdown)
			}
		})
	}
}

func TestFailpointFiresOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fire := firesAt(dir, "warmup_stuck")
	if fire() {
		t.Fatal("fired without being armed")
	}
	if err := os.WriteFile(filepath.Join(dir, "warmup_stuck.armed"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if !fire() || fire() {
		t.Fatal("an armed failpoint fires exactly once")
	}
	if firesAt("", "warmup_stuck")() {
		t.Fatal("no FAILPOINTS_DIR: never fires")
	}
}
