package persisted

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/dev/testkit"
)

// state is a Dapr state store in memory that can fail.
type state struct {
	mu    sync.Mutex
	kv    map[string][]byte
	meta  map[string]map[string]string
	fail  error
	reads int
}

func (s *state) GetState(_ context.Context, _, key string, _ map[string]string) (*dapr.StateItem, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	if s.fail != nil {
		return nil, s.fail
	}
	return &dapr.StateItem{Key: key, Value: s.kv[key]}, nil
}

func (s *state) SaveState(_ context.Context, _, key string, data []byte, meta map[string]string, _ ...dapr.StateOption) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.kv[key], s.meta[key] = data, meta
	return nil
}

func hash(q string) string { h := sha256.Sum256([]byte(q)); return hex.EncodeToString(h[:]) }

func TestQueries(t *testing.T) {
	t.Parallel()
	st := &state{kv: map[string][]byte{}, meta: map[string]map[string]string{}}
	a := New(st, "gateway-state", 24*time.Hour, 10, testkit.Quiet())
	b := New(st, "gateway-state", 24*time.Hour, 10, testkit.Quiet()) // another replica
	ctx := t.Context()
	q := "{ health { status } }"
	a.Add(ctx, hash(q), q)
	if got, ok := b.Get(ctx, hash(q)); !ok || got != q {
		t.Fatalf("another replica: %q %v; want the query", got, ok)
	}
	if st.meta["apq|"+hash(q)]["ttlInSeconds"] != "86400" {
		t.Fatalf("stored without its TTL: %v", st.meta)
	}
	reads := st.reads
	if _, ok := b.Get(ctx, hash(q)); !ok || st.reads != reads {
		t.Fatal("a query this replica has seen is read from the store again")
	}
	for _, key := range []string{"not-a-hash", "a||b", hash(q)[:63] + "z"} {
		if _, ok := a.Get(ctx, key); ok {
			t.Fatalf("Get(%q) found something", key)
		}
	}
	// The store down: a miss (the client sends the query again), never a failure.
	st.fail = errors.New("connection refused")
	if _, ok := New(st, "gateway-state", time.Hour, 10, testkit.Quiet()).Get(ctx, hash("{ x }")); ok {
		t.Fatal("found a query with the store down")
	}
	a.Add(ctx, hash("{ y }"), "{ y }") // logged, not failed
	if got, ok := a.Get(ctx, hash("{ y }")); !ok || got != "{ y }" {
		t.Fatal("this replica forgot a query it was sent while the store was down")
	}
}
