package graph

import (
	"context"
	"log/slog"
	"time"

	"github.com/daca-go/daca/gateway/auth"
	"github.com/daca-go/daca/gateway/backend"
	"github.com/daca-go/daca/gateway/fanout"
	"github.com/daca-go/daca/gateway/replies"
	"github.com/daca-go/daca/graph/model"
)

// Resolver is the root resolver. Resolvers validate their arguments,
// authorise the caller (Guard), apply the chat-turn limit (Turns), and then
// call the Backend, subscribe to a Broker or follow a turn (Runs). The
// gateway's main assembles it; gateway/server serves it.
type Resolver struct {
	Backend       backend.Backend
	Conversations *fanout.Broker[*model.ConversationEvent]
	Memories      *fanout.Broker[*model.MemoryEvent]
	Log           *slog.Logger
	// Guard authorises callers (AUTH_MODE); nil or mode none trusts the arguments.
	Guard *auth.Guard
	// Turns limits sendMessage and startChat per user; nil: no limit.
	Turns TurnLimiter
	// Runs follows chat turns for the chatRun subscription (one poller per
	// turn).
	Runs *RunWatch
	// Replies keeps the replies being written, for chatStream.
	Replies *replies.Store

	ends streamEnds // one watcher of a running turn's end per turn
}

// TurnLimiter limits chat turns per user (ratelimit.Limiter in one process,
// ratelimit.Shared across the gateway's replicas).
type TurnLimiter interface {
	Allow(ctx context.Context, userID string) (ok bool, retryAfter time.Duration)
}
