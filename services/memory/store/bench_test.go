package store

import (
	"context"
	"fmt"
	"testing"
	"time"

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
