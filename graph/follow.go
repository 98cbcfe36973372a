package graph

import (
	"context"
	"time"

	"github.com/daca-go/daca/gateway/backend"
	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/logging"
)

// followRun sends the run's state, then every change of status or stage,
// until the run ends or the subscriber leaves. It closes ch.
func (r *Resolver) followRun(ctx context.Context, run backend.Run, ch chan<- *model.ChatRun) {
	defer close(ch)
	poll := r.RunPoll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	send := func(run backend.Run) bool {
		select {
		case ch <- toRun(run):
			return true
		case <-ctx.Done():
			return false
		}
	}
	if !send(run) || run.Terminal() {
		return
	}
	last := run
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur, err := r.Backend.ChatRun(ctx, run.InstanceID)
		if err != nil || cur == nil {
			if ctx.Err() == nil {
				logging.From(ctx, r.Log).Warn("chatRun subscription: reading the turn failed; retrying", "instance_id", run.InstanceID, "err", err)
			}
			continue
		}
		if cur.Status == last.Status && cur.Stage == last.Stage {
			continue
		}
		if !send(*cur) || cur.Terminal() {
			return
		}
		last = *cur
	}
}
