package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/statetest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// atCap is a memory whose session "s" is full: HistoryCap entries and
// AppliedCap applied ids (where a long conversation stays), the turns'
// texts about as long as make bench's.
func atCap(b *testing.B) *Memory {
	b.Helper()
	m := New(statetest.New(), Config{SummaryEvery: 5}, testkit.Quiet())
	for i := range m.cfg.AppliedCap {
		e := contract.ConversationUpdated{UserID: "u", SessionID: "s", UserMessage: fmt.Sprintf("hello bench-c3-t%d, how are you today?", i),
			AssistantReply: "Hello! This is the test provider's reply, a sentence or two long, as a model's short answer is.", SentAt: time.Now()}
		if _, err := m.Apply(b.Context(), fmt.Sprintf("chat-%032x", i), e, fixedSummary("sum"), nil); err != nil {
			b.Fatal(err)
		}
	}
	return m
}

// BenchmarkTurnAtCap is what the memory does for one turn of a session at
// its cap: the turn's context read, its event applied (the summary waits:
// SummaryEvery), and every fifth turn the summary's read of the history.
func BenchmarkTurnAtCap(b *testing.B) {
	m := atCap(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, _, err := m.Context(ctx, "u", "s", contract.ContextEntries); err != nil {
			b.Fatal(err)
		}
		e := contract.ConversationUpdated{UserID: "u", SessionID: "s", UserMessage: "hello again", AssistantReply: "Hello! A reply.", SentAt: time.Now()}
		if _, err := m.Apply(ctx, fmt.Sprintf("bench-%d", i), e, fixedSummary("sum"), nil); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// slow is a state store a sidecar's round trip away (each call waits rtt),
// counting the writes tried.
type slow struct {
	*statetest.State
	rtt   time.Duration
	saves atomic.Int64
}

func (s *slow) GetState(ctx context.Context, store, key string, meta map[string]string) (*dapr.StateItem, error) {
	time.Sleep(s.rtt)
	return s.State.GetState(ctx, store, key, meta)
}

func (s *slow) SaveStateWithETag(ctx context.Context, store, key string, data []byte, etag string, meta map[string]string, so ...dapr.StateOption) error {
	time.Sleep(s.rtt)
	s.saves.Add(1)
	return s.State.SaveStateWithETag(ctx, store, key, data, etag, meta, so...)
}

// BenchmarkTurnsOfOneUserAtOnce is 16 turns of one user, each in a session
// of its own, applied at once (make bench's cost part at 16 clients) over a
// store 200µs away: the user's document and session list are written by
// every turn. It reports the writes tried and made again per turn.
func BenchmarkTurnsOfOneUserAtOnce(b *testing.B) {
	const clients = 16
	st := &slow{State: statetest.New(), rtt: 200 * time.Microsecond}
	var retried atomic.Int64
	m := New(st, Config{SummaryEvery: 5, Retried: func(string) { retried.Add(1) }}, testkit.Quiet())
	ctx := context.Background()
	turns := 0
	for b.Loop() {
		var wg sync.WaitGroup
		for c := range clients {
			id := fmt.Sprintf("t%d-c%d", turns, c)
			wg.Go(func() {
				e := contract.ConversationUpdated{UserID: "u", SessionID: fmt.Sprintf("s%d", c), UserMessage: "hello again", AssistantReply: "Hello! A reply.", SentAt: time.Now()}
				if _, err := m.Apply(ctx, id, e, fixedSummary("sum"), nil); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		turns++
	}
	n := float64(turns * clients)
	b.ReportMetric(float64(st.saves.Load())/n, "writes/turn")
	b.ReportMetric(float64(retried.Load())/n, "again/turn")
}
