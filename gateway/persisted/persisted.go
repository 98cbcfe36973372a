// Package persisted keeps the automatic persisted queries (Apollo's APQ:
// a client sends a query's SHA-256 instead of the query) of every gateway
// replica in the gateway's Dapr state store, bounded by a TTL, with this
// replica's recent ones in memory in front. The store being down never
// fails a request: a lookup misses (the client sends the query again) and a
// write is logged.
package persisted

import (
	"context"
	"encoding/hex"
	"log/slog"
	"math"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/logging"
)

// State is the part of the Dapr client the store uses.
type State interface {
	GetState(ctx context.Context, storeName, key string, meta map[string]string) (*dapr.StateItem, error)
	SaveState(ctx context.Context, storeName, key string, data []byte, meta map[string]string, so ...dapr.StateOption) error
}

// Queries is a graphql.Cache[string] of persisted queries by hash.
type Queries struct {
	state  State
	store  string
	ttl    time.Duration
	local  *lru.LRU[string]
	log    *slog.Logger
	prefix string
}

var _ graphql.Cache[string] = (*Queries)(nil)

// New returns the persisted queries kept in store (the gateway's state
// store) for ttl, with the last local queries of this replica in memory.
func New(state State, store string, ttl time.Duration, local int, log *slog.Logger) *Queries {
	return &Queries{state: state, store: store, ttl: ttl, local: lru.New[string](local), log: log, prefix: "apq|"}
}

// validHash reports whether key is a SHA-256 in hex (what APQ sends): only
// such keys reach the state store.
func validHash(key string) bool {
	if len(key) != 64 {
		return false
	}
	_, err := hex.DecodeString(key)
	return err == nil
}

// Get implements graphql.Cache.
func (q *Queries) Get(ctx context.Context, hash string) (string, bool) {
	if !validHash(hash) {
		return "", false
	}
	if v, ok := q.local.Get(ctx, hash); ok {
		return v, true
	}
	item, err := q.state.GetState(ctx, q.store, q.prefix+hash, nil)
	if err != nil {
		logging.From(ctx, q.log).Warn("persisted queries: the state store failed; the client will send the query", "err", err)
		return "", false
	}
	if item == nil || len(item.Value) == 0 {
		return "", false
	}
	v := string(item.Value)
	q.local.Add(ctx, hash, v)
	return v, true
}

// Add implements graphql.Cache (gqlgen has checked that hash is the
// query's).
func (q *Queries) Add(ctx context.Context, hash, query string) {
	q.local.Add(ctx, hash, query)
	if !validHash(hash) {
		return
	}
	meta := map[string]string{"ttlInSeconds": strconv.Itoa(int(math.Ceil(q.ttl.Seconds()))), "contentType": "text/plain"}
	if err := q.state.SaveState(ctx, q.store, q.prefix+hash, []byte(query), meta); err != nil {
		logging.From(ctx, q.log).Warn("persisted queries: the state store failed; the query stays known to this replica only", "err", err)
	}
}
