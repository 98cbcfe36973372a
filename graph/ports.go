package graph

import (
	"context"
	"time"

	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/contract"
)

// The ports of the resolvers: what they need from outside, declared here
// and implemented by the gateway (gateway/backend, gateway/live,
// gateway/auth, gateway/ratelimit, gateway/wstransport), which assembles the
// Resolver in gateway/wire.go. graph imports nothing under gateway/.

// Backend is the resolvers' way to chat-service and agent-memory-service
// (gateway/backend: Dapr service invocation through the gateway's sidecar).
type Backend interface {
	Memory(ctx context.Context, userID string) (contract.Profile, error)
	InitializeMemory(ctx context.Context, userID string, p contract.Profile) (contract.Profile, error)
	Conversation(ctx context.Context, sessionID string) ([]contract.Entry, error)
	// Conversations reads several histories in one call (at most
	// contract.MaxBatch ids), the last `last` entries of each when last > 0.
	Conversations(ctx context.Context, sessionIDs []string, last int) (map[string][]contract.Entry, error)
	Sessions(ctx context.Context, userID string) ([]contract.SessionInfo, error)
	// Usage is what a user's LLM calls took from the start of since's UTC
	// day on (the memory's count).
	Usage(ctx context.Context, userID string, since time.Time) (contract.UsageReply, error)
	// SessionOwner is the user a session belongs to; "" for a session
	// nobody has started. One lookup.
	SessionOwner(ctx context.Context, sessionID string) (string, error)
	ForgetUser(ctx context.Context, userID string) (int, error)
	DeleteConversation(ctx context.Context, sessionID string) (bool, error)
	SendMessage(ctx context.Context, in ChatInput) (contract.ChatReply, error)
	StartChat(ctx context.Context, in ChatInput) (contract.ChatRun, error)
	// ChatRun reads a turn; nil for an unknown one. Concurrent reads of a
	// turn may share one call.
	ChatRun(ctx context.Context, instanceID string) (*contract.ChatRun, error)
	// CancelChat stops a turn (Dapr's terminate) and returns its state; nil
	// for an unknown turn.
	CancelChat(ctx context.Context, instanceID string) (*contract.ChatRun, error)
	Health(ctx context.Context) BackendHealth
	// Tools are the tools the agent can use now.
	Tools(ctx context.Context) ([]contract.ToolInfo, error)
	// PendingApprovals are the user's tool calls that wait for a decision.
	PendingApprovals(ctx context.Context, userID string) ([]contract.Approval, error)
	// Approval reads a request for a decision; nil for an unknown one.
	Approval(ctx context.Context, id string) (*contract.Approval, error)
	// DecideToolCall records a decision and answers the request (the first
	// decision when there was one; Invalid when it expired or its turn was
	// cancelled).
	DecideToolCall(ctx context.Context, id string, d contract.Decision) (contract.Approval, error)
}

// ChatInput is a checked message to the agent.
type ChatInput struct {
	UserID         string
	Text           string
	SessionID      string // "": a new session
	Tags           []string
	IdempotencyKey string // "": the backend makes one per call
	// OnBusy is what happens when the session runs a turn already.
	OnBusy contract.BusyPolicy
}

// BackendHealth is what the health query reports of the backends.
type BackendHealth struct {
	Sidecar string            // ok | unavailable
	Apps    map[string]string // app id → ok | degraded | unavailable
	LLM     string            // as chat-service reports it
}

// Caller is who sends an operation, as the bearer token says.
type Caller struct {
	Subject string // the user id
	Admin   bool   // may act for every user
}

// Callers tells who the caller of an operation is (gateway/auth: AUTH_MODE).
type Callers interface {
	// Enabled reports whether callers are authenticated (AUTH_MODE=jwt);
	// when not, every argument is trusted.
	Enabled() bool
	// Caller is the operation's caller, or an UNAUTHENTICATED error.
	Caller(ctx context.Context) (Caller, error)
}

// Feed is a live event source (gateway/fanout.Broker): Subscribe delivers
// each event for which match holds until ctx ends (or the subscriber is
// dropped as too slow: then the channel closes). wake, when not nil, is
// called once per queued event and once at the close (Waker).
type Feed[T any] interface {
	Subscribe(ctx context.Context, match func(T) bool, wake func()) <-chan T
}

// ConversationFeed is the feed of conversation events, which also keeps the
// recent ones for subscribers that resume.
type ConversationFeed interface {
	Feed[*model.ConversationEvent]
	Recent(match func(*model.ConversationEvent) bool) []*model.ConversationEvent
}

// ApprovalFeed is the feed of requests for a decision and their changes
// (gateway/live), for approvalRequested.
type ApprovalFeed = Feed[*contract.Approval]

// Replies are the replies being written (gateway/replies), for chatStream.
type Replies interface {
	// Subscribe sends the turn's chunks after seq `after`, those written so
	// far first, until the reply is done or ctx ends.
	Subscribe(ctx context.Context, instanceID string, after int) <-chan *model.ChatChunk
	// Finish ends the turn's stream with status; known: reply is the whole
	// final reply.
	Finish(instanceID string, status model.ChatStatus, reply string, known bool)
}

// TurnLimiter limits chat turns per user (gateway/ratelimit: Limiter in one
// process, Shared across the gateway's replicas).
type TurnLimiter interface {
	Allow(ctx context.Context, userID string) (ok bool, retryAfter time.Duration)
}

// Waker returns the waker of a subscription's operation (gateway/wstransport:
// an idle subscription then holds no goroutine), or nil.
type Waker func(ctx context.Context) func()
