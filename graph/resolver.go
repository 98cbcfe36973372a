package graph

import (
	"context"
	"log/slog"

	"github.com/daca-go/daca/graph/model"
)

// Resolver is the root resolver. Resolvers validate their arguments,
// authorise the caller (access.go), apply the chat-turn limit (Turns), and
// then call the Backend, subscribe to a feed or follow a turn (Runs). Its
// fields are the ports of ports.go; the gateway assembles it
// (gateway/wire.go) and gateway/server serves it.
type Resolver struct {
	Backend       Backend
	Conversations ConversationFeed
	Memories      Feed[*model.MemoryEvent]
	// Approvals are the requests for a decision and their changes.
	Approvals ApprovalFeed
	Log       *slog.Logger
	// Callers authenticates callers (AUTH_MODE); nil: every argument is
	// trusted (AUTH_MODE=none).
	Callers Callers
	// Turns limits sendMessage and startChat per user; nil: no limit.
	Turns TurnLimiter
	// Runs follows chat turns for the chatRun subscription (one poller per
	// turn).
	Runs *RunWatch
	// Replies keeps the replies being written, for chatStream.
	Replies Replies
	// Waker gives a subscription's source its operation's waker; nil: none.
	Waker Waker

	ends streamEnds // one watcher of a running turn's end per turn
}

// waker is the operation's waker, or nil.
func (r *Resolver) waker(ctx context.Context) func() {
	if r.Waker == nil {
		return nil
	}
	return r.Waker(ctx)
}
