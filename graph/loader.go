package graph

import (
	"context"
	"sync"
	"time"

	"github.com/vikstrous/dataloadgen"

	"github.com/daca-go/daca/internal/contract"
)

// loaders batch the reads that fields of a list would otherwise make one
// by one (N+1). They live for one operation: WithLoaders makes fresh ones,
// so nothing is cached across requests or users. Each loader is built on its
// first use: most operations never fan out.
type loaders struct {
	b           Backend
	wait        time.Duration
	historyOnce sync.Once
	history     *dataloadgen.Loader[historyKey, []contract.Entry]
}

type historyKey struct {
	sessionID string
	last      int
}

type loadersKey struct{}

// DefaultLoaderWait is how long a loader gathers keys before it calls the
// backend; gqlgen resolves the elements of a list concurrently, so they
// arrive within microseconds of each other.
const DefaultLoaderWait = 2 * time.Millisecond

// WithLoaders returns ctx with fresh loaders over b that gather keys for
// wait (0: DefaultLoaderWait). The server calls it once per operation
// (handler.AroundOperations).
func WithLoaders(ctx context.Context, b Backend, wait time.Duration) context.Context {
	return context.WithValue(ctx, loadersKey{}, newLoaders(b, wait))
}

func newLoaders(b Backend, wait time.Duration) *loaders {
	if wait <= 0 {
		wait = DefaultLoaderWait
	}
	return &loaders{b: b, wait: wait}
}

// histories returns the loader of session histories.
func (l *loaders) histories() *dataloadgen.Loader[historyKey, []contract.Entry] {
	l.historyOnce.Do(func() {
		l.history = dataloadgen.NewLoader(func(ctx context.Context, keys []historyKey) ([][]contract.Entry, []error) {
			return fetchHistories(ctx, l.b, keys)
		}, dataloadgen.WithWait(l.wait), dataloadgen.WithBatchCapacity(contract.MaxBatch))
	})
	return l.history
}

// loadersFrom returns the operation's loaders, or fresh ones when the
// context has none (a resolver called outside the server).
func (r *Resolver) loadersFrom(ctx context.Context) *loaders {
	if l, ok := ctx.Value(loadersKey{}).(*loaders); ok {
		return l
	}
	return newLoaders(r.Backend, 0)
}

// fetchHistories reads the histories of a batch: one backend call per
// distinct `last` (in practice one call).
func fetchHistories(ctx context.Context, b Backend, keys []historyKey) ([][]contract.Entry, []error) {
	byLast := map[int][]string{}
	for _, k := range keys {
		byLast[k.last] = append(byLast[k.last], k.sessionID)
	}
	got := make(map[int]map[string][]contract.Entry, len(byLast))
	failed := make(map[int]error)
	for last, ids := range byLast {
		got[last], failed[last] = b.Conversations(ctx, ids, last)
	}
	out := make([][]contract.Entry, len(keys))
	errs := make([]error, len(keys))
	for i, k := range keys {
		if errs[i] = failed[k.last]; errs[i] == nil {
			out[i] = got[k.last][k.sessionID]
		}
	}
	return out, errs
}
