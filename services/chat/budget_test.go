package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/testkit"
)

func TestBudget(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 6, 22, 30, 0, 0, time.UTC)
	tests := []struct {
		name    string
		perDay  int
		used    int
		err     error
		refused bool
	}{
		{"off", 0, 1 << 30, nil, false},
		{"under the budget", 1000, 999, nil, false},
		{"used up", 1000, 1000, nil, true},
		{"over it", 1000, 1500, nil, true},
		{"the memory cannot say: the turn goes on", 1000, 0, apperr.New(apperr.Unavailable, "down"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var asked time.Time
			b := &budget{perDay: tt.perDay, now: func() time.Time { return now }, log: testkit.Quiet(),
				usage: func(_ context.Context, user string, since time.Time) (contract.UsageReply, error) {
					asked = since
					return contract.UsageReply{UserID: user, TokensIn: tt.used / 2, TokensOut: tt.used - tt.used/2}, tt.err
				}}
			err := b.check(t.Context(), "ana")
			if !tt.refused {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ae *apperr.Error
			if !errors.As(err, &ae) || ae.Code != apperr.ResourceExhausted || ae.RetryAfter != 90*time.Minute || !ae.ResetsAt.Equal(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)) ||
				!strings.Contains(ae.Message, "resets at 2026-12-07T00:00:00Z") {
				t.Fatalf("%v; want ResourceExhausted until midnight UTC", err)
			}
			if !asked.Equal(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)) {
				t.Fatalf("usage asked since %v; want the day's start", asked)
			}
		})
	}
}
