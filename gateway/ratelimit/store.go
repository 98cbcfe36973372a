package ratelimit

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/daprc"
)

// StateClient is the part of the Dapr client DaprStore uses.
type StateClient interface {
	GetState(ctx context.Context, storeName, key string, meta map[string]string) (*dapr.StateItem, error)
	SaveStateWithETag(ctx context.Context, storeName, key string, data []byte, etag string, meta map[string]string, so ...dapr.StateOption) error
}

// DaprStore is the Store of the chat-turn limit shared by all
// gateway replicas: a Dapr state store of the gateway's own (Store), written
// first-write-wins on the ETag. Keys are Prefix + the limiter's key (Dapr
// adds the app id in front).
type DaprStore struct {
	Sidecar StateClient
	Store   string
	Prefix  string
}

// Get implements Store.
func (s DaprStore) Get(ctx context.Context, key string) ([]byte, string, error) {
	key = s.Prefix + key
	item, err := s.Sidecar.GetState(ctx, s.Store, key, nil)
	if err != nil {
		return nil, "", fmt.Errorf("state store %s: get %s: %w", s.Store, key, err)
	}
	if item == nil || len(item.Value) == 0 {
		return nil, "", nil
	}
	return item.Value, item.Etag, nil
}

// Put implements Store.
func (s DaprStore) Put(ctx context.Context, key string, value []byte, etag string, ttl time.Duration) error {
	key = s.Prefix + key
	meta := map[string]string{"ttlInSeconds": strconv.Itoa(int(math.Ceil(ttl.Seconds())))}
	err := s.Sidecar.SaveStateWithETag(ctx, s.Store, key, value, etag, meta,
		dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite), dapr.WithConsistency(dapr.StateConsistencyStrong))
	if err == nil {
		return nil
	}
	if daprc.IsETagMismatch(err) {
		return ErrConflict
	}
	return fmt.Errorf("state store %s: save %s: %w", s.Store, key, err)
}
