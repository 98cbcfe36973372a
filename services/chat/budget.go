package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/logging"
)

// budget is TOKEN_BUDGET_PER_DAY: a user whose LLM calls took that many
// tokens (in and out, the turns' and the memory's summaries, as the
// provider reported them) in the current UTC day starts no turn until the
// day ends. The count is the memory's (GET /usage/{user_id}), one for every
// gateway and chat-service replica; a turn counts once its event is
// applied, so turns already running when the budget is reached still end.
type budget struct {
	perDay int // 0: off
	usage  func(ctx context.Context, user string, since time.Time) (contract.UsageReply, error)
	now    func() time.Time
	log    *slog.Logger
}

// check refuses a turn of user over the budget: ResourceExhausted, with
// the time the budget resets. When the memory cannot say, the turn goes on
// (the budget is not worth stopping every turn for).
func (b *budget) check(ctx context.Context, user string) error {
	if b == nil || b.perDay <= 0 {
		return nil
	}
	now := b.now().UTC()
	day := now.Truncate(24 * time.Hour)
	u, err := b.usage(ctx, user, day)
	if err != nil {
		logging.From(ctx, b.log).Warn("the token budget could not be checked; the turn goes on", "user_id", user, "err", err)
		return nil
	}
	if used := u.Tokens(); used >= b.perDay {
		reset := day.Add(24 * time.Hour)
		return &apperr.Error{Code: apperr.ResourceExhausted, RetryAfter: reset.Sub(now), ResetsAt: reset,
			Message: fmt.Sprintf("the daily token budget of %d is used up (%d tokens today); it resets at %s", b.perDay, used, reset.Format(time.RFC3339))}
	}
	return nil
}
