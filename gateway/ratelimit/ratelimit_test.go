package ratelimit

import (
	"context"
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	t.Parallel()
	now := time.Unix(0, 0)
	l := New(60, 3) // one per second, burst 3
	l.now = func() time.Time { return now }
	steps := []struct {
		advance time.Duration
		key     string
		allowed bool
	}{
		{0, "a", true}, {0, "a", true}, {0, "a", true}, {0, "a", false},
		{0, "b", true}, // keys are independent
		{500 * time.Millisecond, "a", false},
		{500 * time.Millisecond, "a", true},
		{0, "a", false},
		{10 * time.Second, "a", true}, {0, "a", true}, {0, "a", true}, {0, "a", false}, // refilled to the burst only
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		ok, wait := l.Allow(context.Background(), s.key)
		if ok != s.allowed {
			t.Fatalf("step %d: allowed=%v; want %v", i, ok, s.allowed)
		}
		if !ok && (wait <= 0 || wait > time.Second) {
			t.Fatalf("step %d: wait %s", i, wait)
		}
	}
	if ok, _ := (*Limiter)(nil).Allow(context.Background(), "x"); !ok {
		t.Fatal("nil limiter must allow")
	}
}
