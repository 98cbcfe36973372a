package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/apperr"
)

// Concurrent updates of one key in this process are made as one
// compare-and-swap write (a group commit): while one caller writes the key,
// the changes of the others queue, and the next writer reads the key once,
// runs every queued change on it in turn, and writes it once. Without it, N
// turns of one user applied at once each read and wrote the user's document
// and its session list, and all but one write failed and was made again:
// 3.15 writes made again per turn at 16 clients of one user
// (docs/benchmark.md). Writers in other processes (replicas) still meet
// as compare-and-swap conflicts, read again and change again.

// change is one caller's update of a key: fn changes the caller's document
// v (a pointer to a struct), as read into it; r, when set, is what a get of
// the key answered into v before (the first attempt starts from it when
// the change is written alone).
type change struct {
	v    any
	fn   func(found bool) error
	r    *read
	err  error
	done chan struct{}
}

// keyQueue is a key's queued changes and who writes them (sem held).
type keyQueue struct {
	sem     chan struct{}
	waiting []*change
	users   int
}

// combiner holds the queues of the keys being updated.
type combiner struct {
	mu   sync.Mutex
	keys map[string]*keyQueue
}

func (cb *combiner) enter(key string, c *change) *keyQueue {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	if cb.keys == nil {
		cb.keys = map[string]*keyQueue{}
	}
	q := cb.keys[key]
	if q == nil {
		q = &keyQueue{sem: make(chan struct{}, 1)}
		cb.keys[key] = q
	}
	q.users++
	q.waiting = append(q.waiting, c)
	return q
}

func (cb *combiner) leave(key string, q *keyQueue) {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	if q.users--; q.users == 0 {
		delete(cb.keys, key)
	}
}

// take empties the key's queue.
func (cb *combiner) take(q *keyQueue) []*change {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	batch := q.waiting
	q.waiting = nil
	return batch
}

// requeue puts changes back at the queue's head (their writer gave up).
func (cb *combiner) requeue(q *keyQueue, cs []*change) {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	q.waiting = append(slices.Clone(cs), q.waiting...)
}

// withdraw removes c from the queue; false when a writer has taken it.
func (cb *combiner) withdraw(q *keyQueue, c *change) bool {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	i := slices.Index(q.waiting, c)
	if i < 0 {
		return false
	}
	q.waiting = slices.Delete(q.waiting, i, i+1)
	return true
}

// updateRead runs a compare-and-swap update of key: change (which may
// return errSkip to write nothing) changes v as read, and the result is
// written with the ETag read; on a conflict, again from a new read. v is a
// pointer to the key's document type; when the update returns nil, v holds
// the document as written (or as read, when nothing was). r, when set, is
// what the get that filled v answered (nil: it reads first). Changes of
// one key made at once in this process are written together (combiner);
// each is run once per attempt, in the order they came.
func (m *Memory) updateRead(ctx context.Context, key string, v any, r *read, fn func(found bool) error) error {
	c := &change{v: v, fn: fn, r: r, done: make(chan struct{})}
	q := m.combine.enter(key, c)
	defer m.combine.leave(key, q)
	for {
		expired := ctx.Done()
		if ctx.Err() != nil {
			if m.combine.withdraw(q, c) {
				return apperr.Wrap(apperr.Timeout, ctx.Err(), "the state store did not answer in time")
			}
			expired = nil // a writer has taken c: its answer
		}
		select {
		case <-c.done:
			return c.err
		case q.sem <- struct{}{}:
			if ctx.Err() == nil {
				m.lead(ctx, key, q, c)
			}
			<-q.sem
		case <-expired:
		}
	}
}

// lead writes the key's queued changes (c's among them, unless a writer
// before took it). When its time runs out first, the changes of the others
// go back to the queue for one of them to write.
func (m *Memory) lead(ctx context.Context, key string, q *keyQueue, c *change) {
	batch := m.combine.take(q)
	if len(batch) == 0 {
		return
	}
	err := m.commit(ctx, key, batch)
	if err == nil {
		return
	}
	var others []*change
	for _, o := range batch {
		if o == c || o.err != nil {
			if o == c {
				o.err = err
			}
			close(o.done)
		} else {
			others = append(others, o)
		}
	}
	m.combine.requeue(q, others)
}

// commit writes a batch of changes of key and tells each its answer; it
// returns an error, and tells nobody, only when ctx ends first (the
// changes are to be written by someone else).
func (m *Memory) commit(ctx context.Context, key string, batch []*change) error {
	typ := reflect.TypeOf(batch[0].v).Elem()
	finish := func(cur reflect.Value, err error) {
		for _, c := range batch {
			if c.err == nil {
				if err != nil {
					c.err = err
				} else if c.v != cur.Interface() {
					reflect.ValueOf(c.v).Elem().Set(cur.Elem())
				}
			}
			close(c.done)
		}
	}
	var lastErr error
	for attempt := 0; attempt < m.cfg.MaxCASTries; attempt++ {
		var (
			etag  string
			found bool
			raw   []byte
			cur   reflect.Value // the document being changed (a pointer)
		)
		if attempt == 0 && len(batch) == 1 && batch[0].r != nil {
			etag, found, cur = batch[0].r.etag, batch[0].r.found, reflect.ValueOf(batch[0].v)
		} else {
			var err error
			if raw, etag, err = m.getRaw(ctx, key); err != nil {
				if ctx.Err() != nil { // this writer's time, not the store
					return apperr.Wrap(apperr.Timeout, ctx.Err(), "the state store did not answer in time")
				}
				finish(cur, err)
				return nil
			}
			found = len(raw) > 0
		}
		changed, err := m.run(key, typ, batch, raw, found, &cur)
		if err != nil {
			finish(cur, err)
			return nil
		}
		if !changed {
			finish(cur, nil)
			return nil
		}
		b, err := json.Marshal(cur.Interface())
		if err != nil {
			finish(cur, apperr.Wrap(apperr.Internal, err, "encoding failed"))
			return nil
		}
		err = m.st.SaveStateWithETag(ctx, m.cfg.Store, key, b, etag, map[string]string{"contentType": "application/json"},
			dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite), dapr.WithConsistency(dapr.StateConsistencyStrong))
		if err == nil {
			finish(cur, nil)
			return nil
		}
		// A conflict (another writer was first) or a passing failure: read
		// again after a short random pause; a real outage shows on the read.
		lastErr = err
		if m.cfg.Retried != nil {
			doc, _, _ := strings.Cut(key, ":")
			m.cfg.Retried(doc)
		}
		if ctx.Err() != nil {
			return apperr.Wrap(apperr.Timeout, ctx.Err(), "the state store did not answer in time")
		}
		pause := time.Duration(1+rand.IntN(5+min(attempt, 20)*2)) * time.Millisecond
		select {
		case <-ctx.Done():
			return apperr.Wrap(apperr.Timeout, ctx.Err(), "the state store did not answer in time")
		case <-time.After(pause):
		}
	}
	finish(reflect.Value{}, apperr.Wrap(apperr.Unavailable, fmt.Errorf("%w: %s: too much contention: %v", errStore, key, lastErr), "the state store is busy; try again"))
	return nil
}

// run runs the batch's changes, in turn, on the document read (raw; or
// *cur, already decoded, when raw is nil), each on its caller's document
// set to what the changes before it made. A change that fails gets its
// error and the others run again without it, from the document read. It
// reports whether any change was made; *cur is the document they made.
func (m *Memory) run(key string, typ reflect.Type, batch []*change, raw []byte, found bool, cur *reflect.Value) (changed bool, err error) {
	preread := cur.IsValid()
	for {
		if !preread {
			*cur = reflect.New(typ)
			if raw != nil {
				if err := json.Unmarshal(raw, cur.Interface()); err != nil {
					return false, apperr.Wrap(apperr.Internal, fmt.Errorf("decode %s: %w", key, err), "stored data is corrupt")
				}
			}
		}
		changed = false
		failed := false
		for _, c := range batch {
			if c.err != nil {
				continue
			}
			if c.v != cur.Interface() {
				reflect.ValueOf(c.v).Elem().Set(cur.Elem())
			}
			switch err := c.fn(found || changed); {
			case err == nil:
				changed = true
				*cur = reflect.ValueOf(c.v)
			case errors.Is(err, errSkip):
				reflect.ValueOf(c.v).Elem().Set(cur.Elem()) // a skip changes nothing
			default:
				c.err = err
				failed = true
			}
			if failed {
				break
			}
		}
		if !failed || preread { // read before, it was alone in its batch
			return changed && !failed, nil
		}
	}
}

// getRaw reads key as stored; nil when absent.
func (m *Memory) getRaw(ctx context.Context, key string) (raw []byte, etag string, err error) {
	item, err := m.st.GetState(ctx, m.cfg.Store, key, nil)
	if err != nil {
		return nil, "", apperr.Wrap(apperr.Unavailable, fmt.Errorf("%w: get %s: %v", errStore, key, err), "the state store is unavailable")
	}
	if item == nil {
		return nil, "", nil
	}
	return item.Value, item.Etag, nil
}
