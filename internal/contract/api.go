package contract

import (
	"time"

	"github.com/daca-go/daca/internal/apperr"
)

// Profile is what the agent knows about a user (the tutorial's
// UserMetadata): GET /memories/{user_id} of agent-memory-service.
type Profile struct {
	Name           string `json:"name"`
	PreferredStyle string `json:"preferred_style"`
	UserSummary    string `json:"user_summary"`
}

// DefaultProfile is the profile of a user the memory has never seen.
func DefaultProfile(userID string) Profile {
	return Profile{Name: userID, PreferredStyle: "casual", UserSummary: userID + " is a new user."}
}

// Roles of history entries.
const (
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// Entry is one message of a conversation: an element of "history" in
// GET /conversations/{session_id}.
type Entry struct {
	Role      string    `json:"role"` // RoleUser or RoleAssistant
	Content   string    `json:"content"`
	Timestamp time.Time `json:"timestamp"`
	// Seq is the entry's place in its conversation: 1 for the first message
	// ever written there, never renumbered when older entries are dropped
	// (HISTORY_CAP). Set on what the memory service answers, not stored.
	Seq int `json:"seq,omitempty"`
	// EventID and EventAt are the conversation event that added the entry
	// (its CloudEvent id, the turn's instance id, and its SentAt): the
	// gateway replays the events a resuming subscriber missed from them.
	EventID string    `json:"event_id,omitempty"`
	EventAt time.Time `json:"event_at,omitzero"`
	// ToolCalls are the tools the turn called before this reply (an
	// assistant entry's).
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

// SessionInfo is an entry of GET /users/{user_id}/sessions.
type SessionInfo struct {
	SessionID    string    `json:"session_id"`
	UpdatedAt    time.Time `json:"updated_at"`
	MessageCount int       `json:"message_count"`
	LastMessage  *Entry    `json:"last_message,omitempty"`
}

// ChatRequest is the body of chat-service's POST /chat and /chat/async.
type ChatRequest struct {
	UserID   string        `json:"user_id"`
	Text     string        `json:"text"`
	Metadata *ChatMetadata `json:"metadata,omitempty"`
	Tags     []string      `json:"tags,omitempty"`
	// OnBusy is what happens when the session runs a turn already
	// (BusyPolicy); "": BusyEnqueue.
	OnBusy BusyPolicy `json:"on_busy,omitempty"`
}

// BusyPolicy is what a turn sent to a session that runs one does.
type BusyPolicy string

// Busy policies.
const (
	BusyEnqueue   BusyPolicy = "ENQUEUE"   // wait, and start when the running turn ends (QUEUED)
	BusyReject    BusyPolicy = "REJECT"    // refused: a Conflict naming the running turn
	BusyInterrupt BusyPolicy = "INTERRUPT" // stop the running turn (as cancel does), then run
)

// Check validates a policy ("" is BusyEnqueue).
func (p BusyPolicy) Check() error {
	switch p {
	case "", BusyEnqueue, BusyReject, BusyInterrupt:
		return nil
	}
	return apperr.New(apperr.Invalid, "on_busy must be ENQUEUE, REJECT or INTERRUPT")
}

// ChatMetadata is ChatRequest's optional metadata.
type ChatMetadata struct {
	SessionID string `json:"session_id,omitempty"`
}

// IdempotencyHeader carries a client's idempotency key to chat-service: a
// retried request with the same key (and user) joins the first one's turn.
const IdempotencyHeader = "Idempotency-Key"

// ChatReply is chat-service's answer to POST /chat (200).
type ChatReply struct {
	UserID     string        `json:"user_id"`
	Reply      string        `json:"reply"`
	Status     RunStatus     `json:"status"`
	InstanceID string        `json:"instance_id"`
	Metadata   ReplyMetadata `json:"metadata"`
}

// ReplyMetadata is ChatReply's metadata.
type ReplyMetadata struct {
	SessionID string    `json:"session_id"`
	Timestamp time.Time `json:"timestamp"`
}

// ChatStarted is chat-service's answer to POST /chat/async (202).
type ChatStarted struct {
	InstanceID string `json:"instance_id"`
	SessionID  string `json:"session_id"`
	// Status is PENDING (started) or QUEUED (it waits for the session's
	// running turn).
	Status RunStatus `json:"status,omitempty"`
}

// RunStatus is the state of a chat turn (its workflow's runtime status).
type RunStatus string

// Run statuses, as the workflow engine names them.
const (
	RunPending    RunStatus = "PENDING"
	RunRunning    RunStatus = "RUNNING"
	RunCompleted  RunStatus = "COMPLETED"
	RunFailed     RunStatus = "FAILED"
	RunTerminated RunStatus = "TERMINATED"
	RunCanceled   RunStatus = "CANCELED"
	RunSuspended  RunStatus = "SUSPENDED"
	RunStalled    RunStatus = "STALLED"
	// RunQueued is a turn accepted while its session ran another: it
	// starts when that one ends (BusyEnqueue).
	RunQueued RunStatus = "QUEUED"
	// RunAwaitingApproval is a running turn whose tool call waits for a
	// user's decision (its Stage: StageApproval + ":" + the tool's name).
	RunAwaitingApproval RunStatus = "AWAITING_APPROVAL"
)

// Terminal reports whether a turn in this status has ended.
func (s RunStatus) Terminal() bool {
	switch s {
	case RunCompleted, RunFailed, RunTerminated, RunCanceled:
		return true
	}
	return false
}

// Stages of a running turn (its workflow's custom status).
const (
	StageContext  = "fetching_context"
	StageGenerate = "generating_response"
	StageTool     = "calling_tool" // a tool call of the turn runs
	StageSave     = "saving_conversation"
	StageApproval = "awaiting_approval" // StageApproval:<tool>: a tool call waits for a decision
)

// ChatRun is a chat turn as GET /chat/{instance_id} describes it.
type ChatRun struct {
	InstanceID string     `json:"instance_id"`
	Status     RunStatus  `json:"status"`
	Stage      string     `json:"stage,omitempty"`
	UserID     string     `json:"user_id,omitempty"`
	SessionID  string     `json:"session_id,omitempty"`
	Reply      *string    `json:"reply,omitempty"`
	Error      string     `json:"error,omitempty"` // client-safe
	Timestamp  *time.Time `json:"timestamp,omitempty"`
}

// Terminal reports whether the run has ended.
func (r ChatRun) Terminal() bool { return r.Status.Terminal() }

// ConversationsRequest is the body of agent-memory-service's
// POST /conversations/batch: several histories in one call.
type ConversationsRequest struct {
	SessionIDs []string `json:"session_ids"`
	Last       int      `json:"last"` // the last entries of each; 0: all
}

// Conversation is one session's history.
type Conversation struct {
	SessionID string  `json:"session_id"`
	History   []Entry `json:"history"`
}

// ConversationsReply answers ConversationsRequest, in the order asked.
type ConversationsReply struct {
	Conversations []Conversation `json:"conversations"`
}

// Health is an app's GET /health answer.
type Health struct {
	Status string `json:"status"` // ok | degraded
	LLM    string `json:"llm,omitempty"`
}

// HistoryReply answers GET /conversations/{session_id}.
type HistoryReply struct {
	History []Entry `json:"history"`
}

// ContextReply answers GET /context/{user_id}: what a chat turn starts
// from, in one call — the user's profile and the last entries of a
// session the user owns (empty for another user's or an unknown one).
type ContextReply struct {
	Profile Profile `json:"profile"`
	History []Entry `json:"history"`
}

// UsageReply answers GET /usage/{user_id}: what the user's turns took
// from Since (the start of its UTC day) on — tokens in and out of every LLM
// call made for the user (the turns' and the memory's summaries), the
// turns and their tool calls.
type UsageReply struct {
	UserID    string    `json:"user_id"`
	Since     time.Time `json:"since"`
	TokensIn  int       `json:"tokens_in"`
	TokensOut int       `json:"tokens_out"`
	LLMCalls  int       `json:"llm_calls"`
	Turns     int       `json:"turns"`
	ToolCalls int       `json:"tool_calls"`
}

// Tokens is the tokens in and out.
func (u UsageReply) Tokens() int { return u.TokensIn + u.TokensOut }

// SessionsReply answers GET /users/{user_id}/sessions.
type SessionsReply struct {
	UserID   string        `json:"user_id"`
	Sessions []SessionInfo `json:"sessions"`
}

// InitializeReply answers POST /memories/{user_id}/initialize.
type InitializeReply struct {
	Status   string  `json:"status"` // "success"
	UserID   string  `json:"user_id"`
	Metadata Profile `json:"metadata"`
}

// ForgetReply answers DELETE /memories/{user_id}.
type ForgetReply struct {
	Status          string `json:"status"` // "success"
	UserID          string `json:"user_id"`
	SessionsDeleted int    `json:"sessions_deleted"`
}

// DeletedReply answers DELETE /conversations/{session_id}.
type DeletedReply struct {
	Status    string `json:"status"` // "success"
	SessionID string `json:"session_id"`
}

// Owner is a session and the user it belongs to: the user who started it,
// recorded once and never changed. agent-memory-service's GET
// /owners/{session_id} answers it (404 for a session nobody has started);
// PUT /owners/{session_id} {user_id} records it, or answers 403 when another
// user owns the session.
type Owner struct {
	SessionID string `json:"session_id"`
	UserID    string `json:"user_id"`
}
