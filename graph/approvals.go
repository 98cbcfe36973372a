package graph

import (
	"context"

	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/contract"
)

// approvalRequests is approvalRequested's source: the user's requests
// still pending first, then each new one, every request once. The live
// feed is joined before the pending ones are read, so a request made in
// between is not missed (and not sent twice).
func (r *Resolver) approvalRequests(ctx context.Context, userID string) (<-chan *model.Approval, error) {
	ctx, cancel := context.WithCancel(ctx)
	live := r.Approvals.Subscribe(ctx, func(a *contract.Approval) bool {
		return a.UserID == userID && a.Status == contract.ApprovalPending
	}, nil)
	pending, err := r.Backend.PendingApprovals(ctx, userID)
	if err != nil {
		cancel()
		return nil, err
	}
	out := make(chan *model.Approval, len(pending)+1)
	go func() {
		defer cancel()
		defer close(out)
		seen := make(map[string]bool, len(pending))
		send := func(a contract.Approval) bool {
			if seen[a.ID] {
				return true
			}
			seen[a.ID] = true
			select {
			case out <- model.ApprovalOf(a):
				return true
			case <-ctx.Done():
				return false
			}
		}
		for _, a := range pending {
			if !send(a) {
				return
			}
		}
		for a := range live {
			if !send(*a) {
				return
			}
		}
	}()
	return out, nil
}
