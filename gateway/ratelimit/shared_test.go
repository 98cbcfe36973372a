package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/dev/testkit"
)

// memStore is a Store in memory, with compare-and-swap on a version number.
type memStore struct {
	mu       sync.Mutex
	vals     map[string][]byte
	vers     map[string]int
	ttls     map[string]time.Duration
	fail     error        // every call fails with it
	conflict atomic.Int64 // the next n writes conflict
}

func newMemStore() *memStore {
	return &memStore{vals: map[string][]byte{}, vers: map[string]int{}, ttls: map[string]time.Duration{}}
}

func (m *memStore) Get(_ context.Context, key string) ([]byte, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, "", m.fail
	}
	v, ok := m.vals[key]
	if !ok {
		return nil, "", nil
	}
	return v, strconv.Itoa(m.vers[key]), nil
}

func (m *memStore) Put(_ context.Context, key string, value []byte, etag string, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	if m.conflict.Add(-1) >= 0 {
		return ErrConflict
	}
	cur := ""
	if _, ok := m.vals[key]; ok {
		cur = strconv.Itoa(m.vers[key])
	}
	if etag != cur {
		return ErrConflict
	}
	m.vals[key], m.ttls[key] = value, ttl
	m.vers[key]++
	return nil
}

func TestSharedLimit(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	store := newMemStore()
	// Two replicas sharing one store: one per second, burst 3.
	a, b := NewShared(store, 60, 3, testkit.Quiet()), NewShared(store, 60, 3, testkit.Quiet())
	a.now = func() time.Time { return now }
	b.now = a.now
	steps := []struct {
		advance time.Duration
		via     *Shared
		key     string
		allowed bool
		wait    time.Duration // when refused
	}{
		{0, a, "u", true, 0}, {0, b, "u", true, 0}, {0, a, "u", true, 0}, // the burst, across replicas
		{0, b, "u", false, time.Second},
		{0, a, "v", true, 0}, // keys are independent
		{400 * time.Millisecond, a, "u", false, 600 * time.Millisecond},
		{600 * time.Millisecond, b, "u", true, 0},
		{0, a, "u", false, time.Second},
		{10 * time.Second, b, "u", true, 0}, {0, a, "u", true, 0}, {0, b, "u", true, 0}, {0, a, "u", false, time.Second}, // refilled to the burst only
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		ok, wait := s.via.Allow(context.Background(), s.key)
		if ok != s.allowed || wait != s.wait {
			t.Fatalf("step %d: allowed=%v wait=%s; want %v, %s", i, ok, wait, s.allowed, s.wait)
		}
	}
	if ttl := store.ttls["u"]; ttl <= 0 || ttl > 4*time.Second {
		t.Fatalf("key kept for %s; want until the bucket is full again", ttl)
	}
	if ok, _ := (*Shared)(nil).Allow(context.Background(), "x"); !ok {
		t.Fatal("nil limiter must allow")
	}
	if ok, _ := NewShared(store, 0, 3, nil).Allow(context.Background(), "x"); !ok {
		t.Fatal("rate 0 must allow")
	}
}

func TestSharedRetriesConflicts(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	l := NewShared(store, 60, 1, testkit.Quiet())
	store.conflict.Store(casTries - 1) // another replica wins all but the last try
	if ok, _ := l.Allow(context.Background(), "u"); !ok {
		t.Fatal("refused after conflicts")
	}
	if ok, _ := l.Allow(context.Background(), "u"); ok {
		t.Fatal("the write after the conflicts was lost: a second event passed a burst of 1")
	}
}

func TestSharedConcurrentReplicas(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	const burst = 10
	replicas := []*Shared{NewShared(store, 1, burst, nil), NewShared(store, 1, burst, nil), NewShared(store, 1, burst, nil)}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, _ := replicas[i%len(replicas)].Allow(context.Background(), "u"); ok {
				allowed.Add(1)
			}
		}()
	}
	wg.Wait()
	// Only the burst passes, whichever replica counts it; an event counted by
	// a replica's own fallback (contention beyond casTries) may add one.
	var fellBack int64
	for _, r := range replicas {
		fellBack += r.FellBack()
	}
	if n := allowed.Load(); n < burst || n > burst+fellBack {
		t.Fatalf("%d events allowed, %d by fallbacks; want %d", n, fellBack, burst)
	}
}

func TestSharedFallsBackWhenTheStoreFails(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	store.fail = errors.New("connection refused")
	l := NewShared(store, 60, 2, testkit.Quiet())
	for i, want := range []bool{true, true, false} { // the per-replica limit still holds
		if ok, _ := l.Allow(context.Background(), "u"); ok != want {
			t.Fatalf("event %d: allowed=%v; want %v", i, ok, want)
		}
	}
	if l.FellBack() != 3 {
		t.Fatalf("FellBack %d; want 3", l.FellBack())
	}
}
