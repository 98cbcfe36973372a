// This file replaces backend/local/task.go of github.com/dapr/durabletask-go
// v0.10.2 in the daprd build (go build -overlay; see tools/dapr/README and
// internal/toolchain). It fixes a race that loses workflow steps:
//
// The executor sends a work item to the app's worker first and only then
// calls WaitFor*Completion, which registers the pending task. When the worker
// answers before that registration (a fast activity, a busy machine), the
// original Complete* found no pending task, the result was dropped ("Ignoring
// complete task which no longer exists: unknown instance ID", dapr/dapr#9641)
// and the wait never ended: the workflow was stuck for good.
//
// Here whichever side comes first creates the pending entry: a completion
// that arrives before its wait is kept (for earlyTTL) and handed to the wait.
// durabletask-go v0.11.0 fixes the same race by registering before sending;
// dapr 1.16.5 cannot use that version.
package local

import (
	"context"
	"sync"
	"time"

	"github.com/dapr/durabletask-go/api"
	"github.com/dapr/durabletask-go/api/protos"
	"github.com/dapr/durabletask-go/backend"
)

// earlyTTL bounds how long a completion may wait for its waiter. The race
// this fixes spans microseconds to milliseconds.
const earlyTTL = 5 * time.Second

type pendingOrchestrator struct {
	response *protos.OrchestratorResponse
	complete chan struct{}
	once     sync.Once
	created  time.Time
	early    bool // completed before anyone waited
}

type pendingActivity struct {
	response *protos.ActivityResponse
	complete chan struct{}
	once     sync.Once
	created  time.Time
	early    bool
}

type TasksBackend struct {
	pendingOrchestrators *sync.Map
	pendingActivities    *sync.Map

	mu    sync.Mutex
	swept time.Time
}

func NewTasksBackend() *TasksBackend {
	return &TasksBackend{
		pendingOrchestrators: &sync.Map{},
		pendingActivities:    &sync.Map{},
	}
}

// sweep drops early completions nobody waited for within earlyTTL.
func (be *TasksBackend) sweep() {
	be.mu.Lock()
	if time.Since(be.swept) < earlyTTL {
		be.mu.Unlock()
		return
	}
	be.swept = time.Now()
	be.mu.Unlock()
	be.pendingOrchestrators.Range(func(k, v any) bool {
		if p := v.(*pendingOrchestrator); p.early && time.Since(p.created) > earlyTTL {
			be.pendingOrchestrators.CompareAndDelete(k, v)
		}
		return true
	})
	be.pendingActivities.Range(func(k, v any) bool {
		if p := v.(*pendingActivity); p.early && time.Since(p.created) > earlyTTL {
			be.pendingActivities.CompareAndDelete(k, v)
		}
		return true
	})
}

func (be *TasksBackend) CompleteActivityTask(ctx context.Context, response *protos.ActivityResponse) error {
	be.completeActivity(response.GetInstanceId(), response.GetTaskId(), response)
	return nil
}

func (be *TasksBackend) CancelActivityTask(ctx context.Context, instanceID api.InstanceID, taskID int32) error {
	key := backend.GetActivityExecutionKey(string(instanceID), taskID)
	v, ok := be.pendingActivities.Load(key)
	if !ok || v.(*pendingActivity).early {
		return api.NewUnknownTaskIDError(instanceID.String(), taskID)
	}
	be.completeActivity(string(instanceID), taskID, nil)
	return nil
}

func (be *TasksBackend) completeActivity(iid string, taskID int32, res *protos.ActivityResponse) {
	be.sweep()
	key := backend.GetActivityExecutionKey(iid, taskID)
	fresh := &pendingActivity{complete: make(chan struct{}), created: time.Now(), early: true}
	v, _ := be.pendingActivities.LoadOrStore(key, fresh)
	p := v.(*pendingActivity)
	p.once.Do(func() {
		p.response = res
		close(p.complete)
	})
}

func (be *TasksBackend) WaitForActivityCompletion(ctx context.Context, request *protos.ActivityRequest) (*protos.ActivityResponse, error) {
	key := backend.GetActivityExecutionKey(request.GetOrchestrationInstance().GetInstanceId(), request.GetTaskId())
	fresh := &pendingActivity{complete: make(chan struct{}), created: time.Now()}
	v, loaded := be.pendingActivities.LoadOrStore(key, fresh)
	p := v.(*pendingActivity)
	if loaded && (!p.early || time.Since(p.created) > earlyTTL) {
		// Not an early completion of this task: start a fresh wait.
		be.pendingActivities.Store(key, fresh)
		p = fresh
	}
	defer be.pendingActivities.CompareAndDelete(key, p)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.complete:
		if p.response == nil {
			return nil, api.ErrTaskCancelled
		}
		return p.response, nil
	}
}

func (be *TasksBackend) CompleteOrchestratorTask(ctx context.Context, response *protos.OrchestratorResponse) error {
	be.completeOrchestrator(response.GetInstanceId(), response)
	return nil
}

func (be *TasksBackend) CancelOrchestratorTask(ctx context.Context, instanceID api.InstanceID) error {
	v, ok := be.pendingOrchestrators.Load(string(instanceID))
	if !ok || v.(*pendingOrchestrator).early {
		return api.NewUnknownInstanceIDError(instanceID.String())
	}
	be.completeOrchestrator(string(instanceID), nil)
	return nil
}

func (be *TasksBackend) completeOrchestrator(iid string, res *protos.OrchestratorResponse) {
	be.sweep()
	fresh := &pendingOrchestrator{complete: make(chan struct{}), created: time.Now(), early: true}
	v, _ := be.pendingOrchestrators.LoadOrStore(iid, fresh)
	p := v.(*pendingOrchestrator)
	p.once.Do(func() {
		p.response = res
		close(p.complete)
	})
}

func (be *TasksBackend) WaitForOrchestratorCompletion(ctx context.Context, request *protos.OrchestratorRequest) (*protos.OrchestratorResponse, error) {
	iid := request.GetInstanceId()
	fresh := &pendingOrchestrator{complete: make(chan struct{}), created: time.Now()}
	v, loaded := be.pendingOrchestrators.LoadOrStore(iid, fresh)
	p := v.(*pendingOrchestrator)
	if loaded && (!p.early || time.Since(p.created) > earlyTTL) {
		be.pendingOrchestrators.Store(iid, fresh)
		p = fresh
	}
	defer be.pendingOrchestrators.CompareAndDelete(iid, p)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.complete:
		if p.response == nil {
			return nil, api.ErrTaskCancelled
		}
		return p.response, nil
	}
}
