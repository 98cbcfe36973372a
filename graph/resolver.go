package graph

import (
	"log/slog"
	"time"

	"github.com/daca-go/daca/gateway/backend"
	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/fanout"
)

// Resolver is the root resolver. Resolvers validate their arguments and call
// the Backend or subscribe to a Broker; nothing else.
type Resolver struct {
	Backend       backend.Backend
	Conversations *fanout.Broker[*model.ConversationEvent]
	Memories      *fanout.Broker[*model.MemoryEvent]
	Log           *slog.Logger
	AuthMode      string
	// RunPoll is how often the chatRun subscription asks for the turn's state.
	RunPoll time.Duration
}
