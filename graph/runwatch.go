package graph

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/contract"
)

// RunWatch follows chat turns for the chatRun subscription: one poller per
// turn, however many subscribers follow it, which stops when the turn ends
// or its last subscriber leaves.
type RunWatch struct {
	fetch func(ctx context.Context, instanceID string) (*contract.ChatRun, error)
	poll  time.Duration
	log   *slog.Logger

	mu    sync.Mutex
	turns map[string]*turnWatch
}

// turnWatch is the poller of one turn and its subscribers. Each subscriber's
// channel holds the latest state only (capacity 1, replaced when unread), so a
// slow subscriber never holds the poller up and still gets the final state.
type turnWatch struct {
	subs   map[chan polled]struct{}
	cancel context.CancelFunc
}

// polled is one state of a turn and when the read that got it started.
type polled struct {
	run contract.ChatRun
	at  time.Time
}

// NewRunWatch polls fetch every poll (default 250 ms).
func NewRunWatch(fetch func(ctx context.Context, instanceID string) (*contract.ChatRun, error), poll time.Duration, log *slog.Logger) *RunWatch {
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	return &RunWatch{fetch: fetch, poll: poll, log: log, turns: map[string]*turnWatch{}}
}

// Polling reports how many turns are being polled.
func (w *RunWatch) Polling() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.turns)
}

// Follow sends first (a state read before the call), then every change of
// status or stage of the turn, until it ends or ctx ends; then it closes the
// returned channel. A state never follows a newer one: reads that started
// before the call are skipped (they may be older than first), except the
// final state.
func (w *RunWatch) Follow(ctx context.Context, first contract.ChatRun) <-chan *model.ChatRun {
	since := time.Now()
	out := make(chan *model.ChatRun, 1)
	if first.Terminal() {
		out <- toRun(first)
		close(out)
		return out
	}
	updates := w.subscribe(first.InstanceID)
	go func() {
		defer close(out)
		defer w.unsubscribe(first.InstanceID, updates)
		send := func(run contract.ChatRun) bool {
			select {
			case out <- toRun(run):
				return true
			case <-ctx.Done():
				return false
			}
		}
		if !send(first) {
			return
		}
		last := first
		for {
			select {
			case <-ctx.Done():
				return
			case p := <-updates:
				cur := p.run
				if !cur.Terminal() && (p.at.Before(since) || cur.Status == last.Status && cur.Stage == last.Stage) {
					continue
				}
				if !send(cur) || cur.Terminal() {
					return
				}
				last = cur
			}
		}
	}()
	return out
}

func (w *RunWatch) subscribe(id string) chan polled {
	ch := make(chan polled, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.turns[id]
	if !ok {
		ctx, cancel := context.WithCancel(context.Background())
		t = &turnWatch{subs: map[chan polled]struct{}{}, cancel: cancel}
		w.turns[id] = t
		go w.poller(ctx, id, t)
	}
	t.subs[ch] = struct{}{}
	return ch
}

func (w *RunWatch) unsubscribe(id string, ch chan polled) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.turns[id]
	if !ok {
		return // the poller ended with the turn
	}
	if _, ok := t.subs[ch]; !ok {
		return // ch belonged to an earlier poller of this turn
	}
	delete(t.subs, ch)
	if len(t.subs) == 0 {
		t.cancel()
		delete(w.turns, id)
	}
}

// poller reads the turn every w.poll and hands each state to every
// subscriber (which keeps the changes), until the turn ends or t is
// cancelled.
func (w *RunWatch) poller(ctx context.Context, id string, t *turnWatch) {
	tick := time.NewTicker(w.poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		at := time.Now()
		cur, err := w.fetch(ctx, id)
		if err != nil || cur == nil {
			if ctx.Err() == nil {
				w.log.Warn("chatRun subscription: reading the turn failed; retrying", "instance_id", id, "err", err)
			}
			continue
		}
		w.mu.Lock()
		for ch := range t.subs {
			select { // keep only the latest state for a subscriber that has not read the last one
			case <-ch:
			default:
			}
			ch <- polled{run: *cur, at: at}
		}
		if cur.Terminal() {
			// Subscribers end on this state; a new subscriber starts a new poller.
			if w.turns[id] == t {
				delete(w.turns, id)
			}
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
	}
}
