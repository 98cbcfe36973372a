// Package statetest is an in-memory stand-in for the Dapr state API that
// behaves like Dapr's Redis state store: with an ETag, or with
// first-write-wins concurrency, a write succeeds only with the key's
// current ETag ("" when the key is absent), and is refused as the sidecar
// refuses it (gRPC Aborted); a write without either overwrites.
package statetest

import (
	"context"
	"strconv"
	"strings"
	"sync"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// State implements memory.State.
type State struct {
	mu         sync.Mutex
	data       map[string][]byte
	ver        map[string]int
	writes     int
	bulkGets   int
	failPrefix string
	prefixErr  error
	getErr     error
	saveErr    error
}

// New returns an empty store.
func New() *State { return &State{data: map[string][]byte{}, ver: map[string]int{}} }

// FailReads makes every read fail with err (nil: reads work again).
func (s *State) FailReads(err error) { s.mu.Lock(); s.getErr = err; s.mu.Unlock() }

// FailWrites makes every write fail with err (nil: writes work again).
func (s *State) FailWrites(err error) { s.mu.Lock(); s.saveErr = err; s.mu.Unlock() }

// FailWritesTo makes every write of a key starting with prefix fail with
// err (nil: they work again).
func (s *State) FailWritesTo(prefix string, err error) {
	s.mu.Lock()
	s.failPrefix, s.prefixErr = prefix, err
	s.mu.Unlock()
}

// Writes is the number of successful writes.
func (s *State) Writes() int { s.mu.Lock(); defer s.mu.Unlock(); return s.writes }

// Len is the number of keys stored.
func (s *State) Len() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.data) }

func (s *State) GetState(_ context.Context, _, key string, _ map[string]string) (*dapr.StateItem, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.getErr != nil {
		return nil, s.getErr
	}
	item := &dapr.StateItem{Key: key, Value: s.data[key]}
	if v, ok := s.ver[key]; ok {
		item.Etag = strconv.Itoa(v)
	}
	return item, nil
}

// GetBulkState reads several keys; BulkGets counts the calls.
func (s *State) GetBulkState(ctx context.Context, store string, keys []string, meta map[string]string, _ int32) ([]*dapr.BulkStateItem, error) {
	s.mu.Lock()
	s.bulkGets++
	s.mu.Unlock()
	items := make([]*dapr.BulkStateItem, 0, len(keys))
	for _, k := range keys {
		it, err := s.GetState(ctx, store, k, meta)
		if err != nil {
			return nil, err
		}
		items = append(items, &dapr.BulkStateItem{Key: it.Key, Value: it.Value, Etag: it.Etag})
	}
	return items, nil
}

// BulkGets is the number of GetBulkState calls.
func (s *State) BulkGets() int { s.mu.Lock(); defer s.mu.Unlock(); return s.bulkGets }

func (s *State) SaveStateWithETag(_ context.Context, _, key string, data []byte, etag string, _ map[string]string, so ...dapr.StateOption) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saveErr != nil {
		return s.saveErr
	}
	if s.prefixErr != nil && strings.HasPrefix(key, s.failPrefix) {
		return s.prefixErr
	}
	var o dapr.StateOptions
	for _, f := range so {
		f(&o)
	}
	cur, exists := s.ver[key]
	checked := etag != "" || o.Concurrency == dapr.StateConcurrencyFirstWrite
	if checked && ((exists && etag != strconv.Itoa(cur)) || (!exists && etag != "")) {
		return status.Error(codes.Aborted, "possible etag mismatch")
	}
	s.ver[key] = cur + 1
	s.data[key] = append([]byte(nil), data...)
	s.writes++
	return nil
}

func (s *State) DeleteStateWithETag(_ context.Context, _, key string, _ *dapr.ETag, _ map[string]string, _ *dapr.StateOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.data, key)
	delete(s.ver, key)
	return nil
}
