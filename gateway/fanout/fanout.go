// Package fanout delivers events to in-process subscribers: one buffered
// channel per subscriber, a filter per subscriber, and a publisher that never
// waits. A subscriber whose buffer is full is dropped (its drop reported with
// its context, then its channel closed), so one slow or stuck client never
// delays the others.
// Everything a subscription holds is freed when its context ends.
package fanout

import (
	"context"
	"sync"
	"sync/atomic"
)

// Broker fans events of type T out to subscribers.
type Broker[T any] struct {
	buf    int
	onDrop func(context.Context)

	mu   sync.RWMutex
	subs map[*sub[T]]struct{}

	delivered atomic.Uint64
	dropped   atomic.Uint64

	rmu    sync.Mutex
	recent []T // a ring of the last keep events published
	next   int // where the next one goes once the ring is full
	keep   int
}

// KeepRecent makes the broker remember the last n events it publishes, for
// Recent. It returns b; call it before the first Publish.
func (b *Broker[T]) KeepRecent(n int) *Broker[T] {
	b.keep = n
	b.recent = make([]T, 0, n)
	return b
}

// Recent returns the remembered events that match (nil: all), oldest first.
func (b *Broker[T]) Recent(match func(T) bool) []T {
	b.rmu.Lock()
	defer b.rmu.Unlock()
	var out []T
	for i := range b.recent {
		ev := b.recent[(b.next+i)%len(b.recent)] // oldest first
		if match == nil || match(ev) {
			out = append(out, ev)
		}
	}
	return out
}

type sub[T any] struct {
	ctx   context.Context
	ch    chan T
	match func(T) bool
	wake  func() // called after each value sent on ch and after ch is closed; may be nil
	once  sync.Once
}

// New returns a broker whose subscribers each buffer up to buf events.
// onDrop (optional) is called with the subscriber's context when a slow
// subscriber is dropped, before its channel is closed, on the publisher's
// goroutine: it must not block.
func New[T any](buf int, onDrop func(ctx context.Context)) *Broker[T] {
	if buf < 1 {
		buf = 1
	}
	return &Broker[T]{buf: buf, onDrop: onDrop, subs: map[*sub[T]]struct{}{}}
}

// Subscribe registers a subscriber for events that match (nil: all) until
// ctx ends (graph.Feed). The channel delivers the matching events; it is
// closed when ctx ends or the subscriber is dropped (reported to the
// broker's onDrop). wake, if not nil, is called after each event queued on the
// subscription's channel and once after the channel is closed (the
// websocket transport's Waker: the subscription then needs no goroutine of
// its own to wait for events).
func (b *Broker[T]) Subscribe(ctx context.Context, match func(T) bool, wake func()) <-chan T {
	s := &sub[T]{ctx: ctx, ch: make(chan T, b.buf), match: match, wake: wake}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	context.AfterFunc(ctx, func() { b.remove(s, false) })
	return s.ch
}

func (b *Broker[T]) remove(s *sub[T], slow bool) {
	s.once.Do(func() {
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
		if slow {
			b.dropped.Add(1)
			if b.onDrop != nil {
				b.onDrop(s.ctx)
			}
		}
		close(s.ch)
		if s.wake != nil {
			s.wake()
		}
	})
}

// Publish delivers ev to every matching subscriber without waiting. It
// returns how many subscribers got it.
func (b *Broker[T]) Publish(ev T) int {
	if b.keep > 0 {
		b.rmu.Lock()
		if len(b.recent) < b.keep {
			b.recent = append(b.recent, ev)
		} else {
			b.recent[b.next] = ev
			b.next = (b.next + 1) % b.keep
		}
		b.rmu.Unlock()
	}
	var slow []*sub[T]
	n := 0
	b.mu.RLock()
	for s := range b.subs {
		if s.match != nil && !s.match(ev) {
			continue
		}
		select {
		case s.ch <- ev:
			n++
			if s.wake != nil {
				s.wake()
			}
		default:
			slow = append(slow, s)
		}
	}
	b.mu.RUnlock()
	for _, s := range slow {
		b.remove(s, true)
	}
	b.delivered.Add(uint64(n))
	return n
}

// Len returns the number of subscribers.
func (b *Broker[T]) Len() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.subs)
}

// Stats returns how many deliveries and drops happened so far.
func (b *Broker[T]) Stats() (delivered, dropped uint64) {
	return b.delivered.Load(), b.dropped.Load()
}
