// Package ratelimit limits events per key (per user, for chat turns): a
// token bucket in memory (Limiter, one process), and the same limit shared
// by every process whose state lives in one Store (Shared, all gateway
// replicas).
package ratelimit

import (
	"context"
	"sync"
	"time"
)

// Limiter allows Burst events at once and Rate events per second after that,
// per key. A zero Rate disables it.
type Limiter struct {
	Rate  float64
	Burst int
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a limiter of perMinute events per minute with a burst.
func New(perMinute, burst int) *Limiter {
	if burst < 1 {
		burst = 1
	}
	return &Limiter{Rate: float64(perMinute) / 60, Burst: burst, now: time.Now, buckets: map[string]*bucket{}}
}

// Allow takes a token for key. When none is left it returns false and how
// long until one is.
func (l *Limiter) Allow(_ context.Context, key string) (bool, time.Duration) {
	if l == nil || l.Rate <= 0 {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: float64(l.Burst), last: now}
		l.buckets[key] = b
	}
	b.tokens += now.Sub(b.last).Seconds() * l.Rate
	if b.tokens > float64(l.Burst) {
		b.tokens = float64(l.Burst)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.Rate * float64(time.Second))
	return false, wait
}

// sweep forgets full buckets now and then, so the map does not grow forever.
func (l *Limiter) sweep(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	full := time.Duration(float64(l.Burst) / l.Rate * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.last) > full {
			delete(l.buckets, k)
		}
	}
}
