package contract

import (
	"errors"
	"time"
)

// ChatStreamed is one piece of a reply as the model writes it, published on
// TopicChatStream by generate_response: the text the piece adds (Delta) and
// the reply so far (Text), so a reader that missed pieces still has the
// whole text. Pieces are coalesced (StreamInterval), not one per token.
//
// Seq numbers the pieces of a turn: 1, 2, 3, … for the first execution of
// generate_response; an execution that starts the reply over (a retry after
// an LLM failure, or after chat-service crashed) numbers its pieces from
// (Execution-1)*SeqBlock+1, so a later execution's pieces always sort after
// an earlier one's and a reader can tell that the text starts over.
type ChatStreamed struct {
	InstanceID string    `json:"instance_id"`
	UserID     string    `json:"user_id"`
	Execution  int       `json:"execution"`
	Seq        int       `json:"seq"`
	Delta      string    `json:"delta"`
	Text       string    `json:"text"`
	ToolCall   *ToolCall `json:"tool_call,omitempty"`
}

// ToolCall is a tool the model called while writing a reply: in a piece
// of the stream (RUNNING, then with its result), in the turn's
// ConversationUpdated and in the history (on the assistant's entry).
type ToolCall struct {
	ID        string         `json:"id,omitempty"`
	Name      string         `json:"name"`             // as the model knows it
	Server    string         `json:"server,omitempty"` // the MCP server; "" for the built-in tool
	Arguments string         `json:"arguments"`
	Result    string         `json:"result,omitempty"`
	Status    ToolCallStatus `json:"status,omitempty"`
	// Approval is the call's request for a user's decision, for a call
	// that needed one.
	Approval *Approval `json:"approval,omitempty"`
}

// ToolCallStatus is where a tool call stands.
type ToolCallStatus string

// Tool call statuses.
const (
	ToolRunning   ToolCallStatus = "RUNNING"
	ToolCompleted ToolCallStatus = "COMPLETED"
	ToolFailed    ToolCallStatus = "FAILED"
)

// ToolInfo is a tool the agent can use now (chat-service's GET /tools).
type ToolInfo struct {
	Name        string `json:"name"`             // as the model knows it
	Server      string `json:"server,omitempty"` // the MCP server; "" for the built-in tool
	Description string `json:"description"`
	ReadOnly    bool   `json:"read_only"` // changes nothing (MCP's readOnlyHint)
}

// ToolsReply answers chat-service's GET /tools.
type ToolsReply struct {
	Tools []ToolInfo `json:"tools"`
}

// SeqBlock is the range of Seq one execution of generate_response uses.
const SeqBlock = 1 << 20

// StreamInterval is how often generate_response publishes what the model
// wrote since its last piece (the first piece goes out at once).
const StreamInterval = 50 * time.Millisecond

// MaxStreamText is the longest reply streamed piece by piece; beyond it the
// pieces stop and readers get the rest with the turn's end.
const MaxStreamText = 256 << 10

// ExecutionOf returns the execution a Seq belongs to (1, 2, …).
func ExecutionOf(seq int) int { return (seq-1)/SeqBlock + 1 }

// Validate reports why the piece cannot be used, or nil.
func (e ChatStreamed) Validate() error {
	switch {
	case !ValidID(e.InstanceID):
		return errors.New("invalid instance_id")
	case e.Execution < 1 || e.Seq < 1 || ExecutionOf(e.Seq) != e.Execution:
		return errors.New("seq outside its execution's block")
	case len(e.Text) > MaxStreamText:
		return errors.New("text too large")
	}
	return nil
}
