package contract

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// EventConversationUpdated is ConversationUpdated's event_type.
const EventConversationUpdated = "ConversationUpdated"

// ConversationUpdated is published on TopicConversations when a chat turn
// ends; its CloudEvent id is the turn's workflow instance id, so a repeated
// publish is recognised and applied once.
type ConversationUpdated struct {
	UserID         string `json:"user_id"`
	SessionID      string `json:"session_id"`
	EventType      string `json:"event_type"`
	UserMessage    string `json:"user_message"`
	AssistantReply string `json:"assistant_reply"`
	// SentAt is when the turn ended (the workflow's clock); with the
	// CloudEvent id it orders the conversation events for a subscriber
	// that resumes (the gateway's cursors). Absent in older events.
	SentAt time.Time `json:"sent_at,omitzero"`
	// ToolCalls are the tools the turn called, in order, with their results.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// Usage is what the turn's LLM calls took (the memory counts it
	// against the user, once per event). Absent in older events.
	Usage *Usage `json:"usage,omitempty"`
}

// Usage is what LLM calls took: tokens as the provider reported them, and
// the calls.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	LLMCalls         int `json:"llm_calls"`
}

// Plus is u and v together.
func (u Usage) Plus(v Usage) Usage {
	return Usage{PromptTokens: u.PromptTokens + v.PromptTokens, CompletionTokens: u.CompletionTokens + v.CompletionTokens, LLMCalls: u.LLMCalls + v.LLMCalls}
}

// NewConversationUpdated returns the event of a finished turn.
func NewConversationUpdated(userID, sessionID, userMessage, reply string) ConversationUpdated {
	return ConversationUpdated{UserID: userID, SessionID: sessionID, EventType: EventConversationUpdated,
		UserMessage: userMessage, AssistantReply: reply}
}

// Validate reports why the event cannot be applied, or nil.
func (e ConversationUpdated) Validate() error {
	switch {
	case e.EventType != EventConversationUpdated:
		return fmt.Errorf("foreign event type %q", e.EventType)
	case !ValidID(e.UserID) || !ValidID(e.SessionID):
		return errors.New("invalid user_id or session_id")
	case strings.TrimSpace(e.UserMessage) == "" || strings.TrimSpace(e.AssistantReply) == "":
		return errors.New("user_message or assistant_reply is empty")
	}
	return nil
}

// MemoryUpdated is published on TopicMemoryUpdates after a
// ConversationUpdated is applied; its CloudEvent id is MemoryEventID of the
// conversation event's id.
type MemoryUpdated struct {
	UserID      string `json:"user_id"`
	SessionID   string `json:"session_id"`
	UserSummary string `json:"user_summary"`
}

// MemoryEventID is the CloudEvent id of the MemoryUpdated that follows the
// conversation event conversationEventID.
func MemoryEventID(conversationEventID string) string { return "memory-" + conversationEventID }

// CloudEventIDMetadata is the publish metadata key that sets the CloudEvent
// id (Dapr's "cloudevent.id").
const CloudEventIDMetadata = "cloudevent.id"

// MaxEventBody is the largest CloudEvent an app reads.
const MaxEventBody = 1 << 20

// CloudEvent is the envelope Dapr delivers (the fields the apps read).
type CloudEvent struct {
	ID          string          `json:"id"`
	Type        string          `json:"type"`
	Source      string          `json:"source"`
	Topic       string          `json:"topic"`
	Time        time.Time       `json:"time"`
	Traceparent string          `json:"traceparent"`
	Data        json.RawMessage `json:"data"`
}

// DecodeCloudEvent reads a delivered CloudEvent and its data into v. Data
// published as a JSON string holding the object (as some publishers do) is
// unwrapped. An error means the event can never be applied (drop it).
func DecodeCloudEvent(body []byte, v any) (CloudEvent, error) {
	var ce CloudEvent
	if err := json.Unmarshal(body, &ce); err != nil {
		return ce, fmt.Errorf("not a JSON CloudEvent: %w", err)
	}
	if ce.ID == "" || len(ce.Data) == 0 {
		return ce, errors.New("not a CloudEvent (no id or data)")
	}
	data := []byte(ce.Data)
	var str string
	if json.Unmarshal(data, &str) == nil {
		data = []byte(str)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return ce, fmt.Errorf("event data is not the expected object: %w", err)
	}
	return ce, nil
}

// Answers an app gives Dapr for a delivered event.
const (
	DeliverySuccess = "SUCCESS"
	DeliveryRetry   = "RETRY"
	DeliveryDrop    = "DROP"
)

// Subscription is one entry of an app's GET /dapr/subscribe answer.
type Subscription struct {
	PubSubName string            `json:"pubsubname"`
	Topic      string            `json:"topic"`
	Routes     map[string]string `json:"routes"`
}
