package graph

import (
	"context"
	"sync"

	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/contract"
)

// streamEnds ends the chatStream of a running turn when the turn ends as
// read from chat-service (FAILED, TERMINATED, or COMPLETED when this replica
// missed the conversation event): one watcher per turn, however many
// subscribers stream it, stopped with the turn's last subscriber.
type streamEnds struct {
	mu    sync.Mutex
	turns map[string]*endWatcher
}

type endWatcher struct {
	subscribers int
	cancel      context.CancelFunc
}

// watchEnd counts a subscriber of run's stream until ctx ends, starting the
// turn's watcher with the first.
func (r *Resolver) watchEnd(ctx context.Context, run contract.ChatRun) {
	e := &r.ends
	id := run.InstanceID
	e.mu.Lock()
	if e.turns == nil {
		e.turns = map[string]*endWatcher{}
	}
	w := e.turns[id]
	if w == nil {
		wctx, cancel := context.WithCancel(context.Background())
		w = &endWatcher{cancel: cancel}
		e.turns[id] = w
		go func() {
			for st := range r.Runs.Follow(wctx, run) {
				switch st.Status { // only an end ends it: not QUEUED, SUSPENDED or AWAITING_APPROVAL
				case model.ChatStatusCompleted, model.ChatStatusFailed, model.ChatStatusTerminated:
					r.Replies.Finish(id, st.Status, deref(st.Reply), false)
				}
			}
		}()
	}
	w.subscribers++
	e.mu.Unlock()
	context.AfterFunc(ctx, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if w.subscribers--; w.subscribers == 0 {
			w.cancel()
			if e.turns[id] == w {
				delete(e.turns, id)
			}
		}
	})
}
