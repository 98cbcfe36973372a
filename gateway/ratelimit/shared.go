package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"
)

// Store keeps one value per key, written by compare-and-swap on its ETag.
type Store interface {
	// Get returns the value of key and its ETag; nil and "" when absent.
	Get(ctx context.Context, key string) (value []byte, etag string, err error)
	// Put writes value if key's ETag is still etag ("": if key is absent),
	// else returns ErrConflict. The key expires after ttl.
	Put(ctx context.Context, key string, value []byte, etag string, ttl time.Duration) error
}

// ErrConflict is what Store.Put returns when another writer was first.
var ErrConflict = errors.New("ratelimit: the key changed since it was read")

// Shared is the limit of Limiter (Burst at once, then Rate per second),
// held across processes: its state is one time per key in a Store, the
// theoretical arrival time of the generic cell rate algorithm, changed by
// compare-and-swap. When the store fails (or stays contended), the process
// falls back to its own Limiter, so a store outage never stops chat turns and
// never lifts the limit entirely.
type Shared struct {
	store    Store
	interval time.Duration // one event per interval
	burst    int
	timeout  time.Duration
	fallback *Limiter
	log      *slog.Logger
	now      func() time.Time
	warned   atomic.Int64 // unix seconds of the last warning
	fellBack atomic.Int64
}

// NewShared returns a limit of perMinute events per minute with a burst
// (perMinute 0: no limit), kept in store.
func NewShared(store Store, perMinute, burst int, log *slog.Logger) *Shared {
	if burst < 1 {
		burst = 1
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Shared{store: store, burst: burst, timeout: 2 * time.Second, fallback: New(perMinute, burst), log: log, now: time.Now}
	if perMinute > 0 {
		s.interval = time.Minute / time.Duration(perMinute)
	}
	return s
}

const casTries = 8

// Allow counts one event for key. When the limit is reached it returns false
// and how long until the next event is allowed.
func (s *Shared) Allow(ctx context.Context, key string) (bool, time.Duration) {
	if s == nil || s.interval <= 0 {
		return true, 0
	}
	// The caller's cancellation does not cut a write half way; the timeout
	// bounds what a slow store adds to a chat turn.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	var err error
	for range casTries {
		ok, wait, terr := s.try(ctx, key)
		if terr == nil {
			return ok, wait
		}
		if err = terr; !errors.Is(err, ErrConflict) {
			break
		}
	}
	s.fellBack.Add(1)
	s.warn(key, err)
	return s.fallback.Allow(ctx, key)
}

// FellBack is how many events were counted by the per-replica fallback.
func (s *Shared) FellBack() int64 { return s.fellBack.Load() }

// try is one read-decide-write round. A denied event writes nothing.
func (s *Shared) try(ctx context.Context, key string) (bool, time.Duration, error) {
	v, etag, err := s.store.Get(ctx, key)
	if err != nil {
		return false, 0, err
	}
	now := s.now()
	tat := now
	if len(v) > 0 {
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return false, 0, errors.New("ratelimit: stored value is not a time: " + strconv.Quote(string(v)))
		}
		if t := time.Unix(0, n); t.After(now) {
			tat = t
		}
	}
	next := tat.Add(s.interval)
	limit := time.Duration(s.burst) * s.interval
	if ahead := next.Sub(now); ahead > limit {
		return false, ahead - limit, nil
	}
	// The key is needed until next: after that the bucket is full again.
	if err := s.store.Put(ctx, key, []byte(strconv.FormatInt(next.UnixNano(), 10)), etag, next.Sub(now)+time.Second); err != nil {
		return false, 0, err
	}
	return true, 0, nil
}

// warn logs a store failure at most once a minute.
func (s *Shared) warn(key string, err error) {
	now := s.now().Unix()
	last := s.warned.Load()
	if now-last < 60 || !s.warned.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("rate limit store unavailable; limiting per replica until it is back", "key", key, "err", err)
}
