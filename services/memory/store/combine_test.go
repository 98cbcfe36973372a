package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/dev/statetest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// gated is a state store whose first write of a key is held (until
// released, or its context ends) so that other updates of the key queue.
type gated struct {
	*statetest.State
	key     string
	entered chan struct{} // closed when the first write of key is held
	release chan struct{}
	once    sync.Once
	saves   atomic.Int32 // writes of key tried
}

func newGated(key string) *gated {
	return &gated{State: statetest.New(), key: key, entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gated) SaveStateWithETag(ctx context.Context, store, key string, data []byte, etag string, meta map[string]string, so ...dapr.StateOption) error {
	if key == g.key {
		g.saves.Add(1)
		first := false
		g.once.Do(func() { first = true })
		if first {
			close(g.entered)
			select {
			case <-g.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return g.State.SaveStateWithETag(ctx, store, key, data, etag, meta, so...)
}

// queued waits until n changes of key wait behind its writer.
func queued(t *testing.T, m *Memory, key string, n int) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, fmt.Sprintf("%d changes queued", n), func() error {
		m.combine.mu.Lock()
		defer m.combine.mu.Unlock()
		if q := m.combine.keys[key]; q == nil || len(q.waiting) != n {
			return errors.New("not yet")
		}
		return nil
	})
}

// TestUpdatesOfAKeyQueuedAreWrittenTogether: while one update of a key is
// written, the others queue; the next writer runs them all on one read
// and writes once, each caller's change made, none lost, none made again,
// and every caller's document is the one written.
func TestUpdatesOfAKeyQueuedAreWrittenTogether(t *testing.T) {
	t.Parallel()
	const n = 16
	g := newGated(userKey("ana"))
	var retried atomic.Int32
	m := New(g, Config{Retried: func(string) { retried.Add(1) }}, testkit.Quiet())
	ctx := t.Context()
	docs := make([]userDoc, n)
	errs := make(chan error, n)
	update := func(i int) {
		errs <- m.update(ctx, userKey("ana"), &docs[i], func(bool) error {
			docs[i].PendingTurns++
			docs[i].Counted = append(docs[i].Counted, fmt.Sprint(i))
			return nil
		})
	}
	go update(0)
	<-g.entered
	for i := 1; i < n; i++ {
		go update(i)
	}
	queued(t, m, userKey("ana"), n-1)
	close(g.release)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var u userDoc
	if _, _, err := m.get(ctx, userKey("ana"), &u); err != nil || u.PendingTurns != n || len(u.Counted) != n {
		t.Fatalf("stored %d turns, %d ids (%v); want %d", u.PendingTurns, len(u.Counted), err, n)
	}
	if got := g.saves.Load(); got != 2 || retried.Load() != 0 {
		t.Fatalf("%d writes tried, %d made again; want 2 (the first, then the %d queued at once) and none again", got, retried.Load(), n-1)
	}
	for i := 1; i < n; i++ {
		if docs[i].PendingTurns != n {
			t.Fatalf("caller %d's document has %d turns; want the written one's %d", i, docs[i].PendingTurns, n)
		}
	}
}

// TestAChangeThatFailsLeavesTheOthersOfItsBatch: in a batch, a change
// that fails (after changing its document) gets its error and leaves no
// trace; one that skips writes nothing; the others are written.
func TestAChangeThatFailsLeavesTheOthersOfItsBatch(t *testing.T) {
	t.Parallel()
	g := newGated(userKey("ana"))
	m := New(g, Config{}, testkit.Quiet())
	ctx := t.Context()
	type answer struct {
		who string
		err error
	}
	answers := make(chan answer, 4)
	run := func(who string, fn func(u *userDoc) error) {
		var u userDoc
		answers <- answer{who, m.update(ctx, userKey("ana"), &u, func(bool) error { return fn(&u) })}
	}
	go run("first", func(u *userDoc) error { u.PendingTurns++; return nil })
	<-g.entered
	go run("failing", func(u *userDoc) error {
		u.PendingSession = "leaked"
		u.PendingTurns += 100
		return errors.New("refused")
	})
	queued(t, m, userKey("ana"), 1)
	go run("skipping", func(*userDoc) error { return errSkip })
	queued(t, m, userKey("ana"), 2)
	go run("last", func(u *userDoc) error { u.PendingTurns++; return nil })
	queued(t, m, userKey("ana"), 3)
	close(g.release)
	for range 4 {
		a := <-answers
		if (a.who == "failing") != (a.err != nil) {
			t.Fatalf("%s answered %v", a.who, a.err)
		}
	}
	var u userDoc
	if _, _, err := m.get(ctx, userKey("ana"), &u); err != nil || u.PendingTurns != 2 || u.PendingSession != "" {
		t.Fatalf("stored %+v (%v); want the two changes and no trace of the failed one", u, err)
	}
}

// TestAQueuedChangeWhoseTimeRunsOut: a queued change whose caller gives up
// is never written; a writer whose time runs out leaves the changes it
// took to the others, who write them.
func TestAQueuedChangeWhoseTimeRunsOut(t *testing.T) {
	t.Parallel()
	g := newGated(userKey("ana"))
	m := New(g, Config{}, testkit.Quiet())
	ctx := t.Context()
	writerCtx, stopWriter := context.WithCancel(ctx)
	waiterCtx, stopWaiter := context.WithCancel(ctx)
	inc := func(u *userDoc) func(bool) error { return func(bool) error { u.PendingTurns++; return nil } }
	errs := map[string]chan error{"writer": make(chan error, 1), "waiter": make(chan error, 1), "other": make(chan error, 1)}
	var uw, uq, uo userDoc
	go func() { errs["writer"] <- m.update(writerCtx, userKey("ana"), &uw, inc(&uw)) }()
	<-g.entered
	go func() { errs["waiter"] <- m.update(waiterCtx, userKey("ana"), &uq, inc(&uq)) }()
	queued(t, m, userKey("ana"), 1)
	go func() { errs["other"] <- m.update(ctx, userKey("ana"), &uo, inc(&uo)) }()
	queued(t, m, userKey("ana"), 2)

	stopWaiter()
	if err := <-errs["waiter"]; apperr.CodeOf(err) != apperr.Timeout {
		t.Fatalf("the waiter who gave up answered %v; want a timeout", err)
	}
	stopWriter()
	if err := <-errs["writer"]; apperr.CodeOf(err) != apperr.Timeout {
		t.Fatalf("the writer whose time ran out answered %v; want a timeout", err)
	}
	if err := <-errs["other"]; err != nil {
		t.Fatalf("the other change: %v", err)
	}
	var u userDoc
	if _, _, err := m.get(ctx, userKey("ana"), &u); err != nil || u.PendingTurns != 1 {
		t.Fatalf("stored %d turns (%v); want only the other's", u.PendingTurns, err)
	}
}

// TestConcurrentTurnsOfOneUserLoseNothing: turns of one user in many
// sessions applied at once are all counted, listed and kept.
func TestConcurrentTurnsOfOneUserLoseNothing(t *testing.T) {
	t.Parallel()
	const n = 24
	m := New(statetest.New(), Config{SummaryEvery: 1000}, testkit.Quiet())
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			_, err := m.Apply(ctx, fmt.Sprintf("ev-%d", i), ev("ana", fmt.Sprintf("s%d", i), "hi"), fixedSummary("sum"), nil)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	use, err := m.Usage(ctx, "ana", time.Now().Add(-time.Hour))
	if err != nil || use.Turns != n {
		t.Fatalf("usage %+v (%v); want %d turns", use, err, n)
	}
	var u userDoc
	if _, _, err := m.get(ctx, userKey("ana"), &u); err != nil || u.PendingTurns != n {
		t.Fatalf("%d turns wait for the summary (%v); want %d", u.PendingTurns, err, n)
	}
	ss, err := m.Sessions(ctx, "ana")
	if err != nil || len(ss) != n {
		t.Fatalf("%d sessions listed (%v); want %d", len(ss), err, n)
	}
	for _, si := range ss {
		if si.MessageCount != 2 || si.LastMessage == nil {
			t.Fatalf("session %+v; want 2 messages", si)
		}
	}
}
