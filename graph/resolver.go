package graph

import (
	"log/slog"

	"github.com/daca-go/daca/gateway/auth"
	"github.com/daca-go/daca/gateway/backend"
	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/fanout"
	"github.com/daca-go/daca/internal/ratelimit"
)

// Resolver is the root resolver. Resolvers validate their arguments and call
// the Backend or subscribe to a Broker; nothing else.
type Resolver struct {
	Backend       backend.Backend
	Conversations *fanout.Broker[*model.ConversationEvent]
	Memories      *fanout.Broker[*model.MemoryEvent]
	Log           *slog.Logger
	AuthMode      string
	// Guard authorises callers (AUTH_MODE); nil or mode none trusts the arguments.
	Guard *auth.Guard
	// Turns limits sendMessage and startChat per user; nil: no limit.
	Turns *ratelimit.Limiter
	// Runs follows chat turns for the chatRun subscription (one poller per
	// turn).
	Runs *RunWatch
}
