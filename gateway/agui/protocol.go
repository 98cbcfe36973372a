package agui

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

// The AG-UI protocol as this endpoint speaks it: the request
// (RunAgentInput) and the events of its answer, in AG-UI 1.0's JSON names.

// Input is AG-UI's RunAgentInput, the fields this endpoint reads.
type Input struct {
	ThreadID       string          `json:"threadId"`
	RunID          string          `json:"runId"`
	Messages       []Message       `json:"messages"`
	Resume         []ResumeEntry   `json:"resume"`
	ForwardedProps json.RawMessage `json:"forwardedProps"`
}

// Message is one message of the thread as the client has it. Raw keeps it
// whole, for a MESSAGES_SNAPSHOT that gives it back unchanged.
type Message struct {
	ID         string          `json:"id"`
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	ToolCalls  []ToolCallRef   `json:"toolCalls"`
	ToolCallID string          `json:"toolCallId"`
	Raw        json.RawMessage `json:"-"`
}

// ToolCallRef is a tool call of an assistant message.
type ToolCallRef struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// UnmarshalJSON keeps the message's JSON beside its fields.
func (m *Message) UnmarshalJSON(b []byte) error {
	type plain Message
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*m = Message(p)
	m.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// Text is the message's text: its content when a string, the join of its
// text parts when a list of parts.
func (m Message) Text() string {
	var s string
	if json.Unmarshal(m.Content, &s) == nil {
		return s
	}
	var parts []struct{ Type, Text string }
	if json.Unmarshal(m.Content, &parts) != nil {
		return ""
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

// ResumeEntry answers one interrupt (a tool call's request for approval).
type ResumeEntry struct {
	InterruptID string          `json:"interruptId"`
	Status      string          `json:"status"` // resolved | cancelled
	Payload     json.RawMessage `json:"payload"`
}

// Decision is what the entry decides: status "resolved" approves unless
// its payload says {"approved": false}; "cancelled" denies. A reason in the
// payload goes with the decision.
func (e ResumeEntry) Decision() (approve bool, reason string, err error) {
	var p struct {
		Approved *bool  `json:"approved"`
		Reason   string `json:"reason"`
	}
	if len(bytes.TrimSpace(e.Payload)) > 0 && !bytes.Equal(bytes.TrimSpace(e.Payload), []byte("null")) {
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			return false, "", apperr.New(apperr.Invalid, "resume %s: payload must be an object such as {\"approved\": true}", e.InterruptID)
		}
	}
	switch e.Status {
	case "resolved":
		return p.Approved == nil || *p.Approved, p.Reason, nil
	case "cancelled":
		if p.Reason == "" {
			p.Reason = "cancelled by the user"
		}
		return false, p.Reason, nil
	}
	return false, "", apperr.New(apperr.Invalid, "resume %s: status must be resolved or cancelled", e.InterruptID)
}

// userID is forwardedProps.userId, or "".
func (in Input) userID() string {
	var p struct {
		UserID string `json:"userId"`
	}
	_ = json.Unmarshal(in.ForwardedProps, &p)
	return p.UserID
}

// check validates what the endpoint reads of the input.
func (in Input) check() error {
	if in.ThreadID != "" {
		if err := contract.CheckID("threadId", in.ThreadID); err != nil {
			return err
		}
	}
	if in.RunID == "" || len(in.RunID) > contract.MaxIdempotencyKey {
		return apperr.New(apperr.Invalid, "runId must be 1 to %d characters", contract.MaxIdempotencyKey)
	}
	for _, e := range in.Resume {
		if err := contract.CheckID("resume.interruptId", e.InterruptID); err != nil {
			return err
		}
		if _, _, err := e.Decision(); err != nil {
			return err
		}
	}
	return nil
}

// last is the thread's last message that is a conversation's (user,
// assistant or tool), or nil.
func (in Input) last() *Message {
	for i := len(in.Messages) - 1; i >= 0; i-- {
		switch in.Messages[i].Role {
		case "user", "assistant", "tool":
			return &in.Messages[i]
		}
	}
	return nil
}

// Event types (AG-UI's EventType).
const (
	RunStarted         = "RUN_STARTED"
	RunFinished        = "RUN_FINISHED"
	RunError           = "RUN_ERROR"
	TextMessageStart   = "TEXT_MESSAGE_START"
	TextMessageContent = "TEXT_MESSAGE_CONTENT"
	TextMessageEnd     = "TEXT_MESSAGE_END"
	ToolCallStart      = "TOOL_CALL_START"
	ToolCallArgs       = "TOOL_CALL_ARGS"
	ToolCallEnd        = "TOOL_CALL_END"
	ToolCallResult     = "TOOL_CALL_RESULT"
	MessagesSnapshot   = "MESSAGES_SNAPSHOT"
)

// Event is one AG-UI event; fields a type does not have are left empty.
type Event struct {
	Type            string            `json:"type"`
	ThreadID        string            `json:"threadId,omitempty"`
	RunID           string            `json:"runId,omitempty"`
	MessageID       string            `json:"messageId,omitempty"`
	Role            string            `json:"role,omitempty"`
	Delta           string            `json:"delta,omitempty"`
	ToolCallID      string            `json:"toolCallId,omitempty"`
	ToolCallName    string            `json:"toolCallName,omitempty"`
	ParentMessageID string            `json:"parentMessageId,omitempty"`
	Content         *string           `json:"content,omitempty"`
	Outcome         *Outcome          `json:"outcome,omitempty"`
	Message         string            `json:"message,omitempty"`
	Code            string            `json:"code,omitempty"`
	Messages        []json.RawMessage `json:"messages,omitempty"`
}

// Outcome is why a run finished: success, interrupt (waiting for the
// interrupts' answers) or cancelled.
type Outcome struct {
	Type       string      `json:"type"`
	Interrupts []Interrupt `json:"interrupts,omitempty"`
}

// Interrupt is a tool call waiting for the user's decision.
type Interrupt struct {
	ID             string         `json:"id"`
	Reason         string         `json:"reason"`
	Message        string         `json:"message,omitempty"`
	ToolCallID     string         `json:"toolCallId,omitempty"`
	ResponseSchema map[string]any `json:"responseSchema,omitempty"`
	ExpiresAt      string         `json:"expiresAt,omitempty"`
	Metadata       map[string]any `json:"metadata,omitempty"`
}

// approvalSchema is the answer an approval interrupt takes (resume payload).
var approvalSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"approved": map[string]any{"type": "boolean", "description": "Run the tool call (true) or deny it (false)."},
		"reason":   map[string]any{"type": "string", "description": "Why, told to the agent with a denial."},
	},
	"required": []string{"approved"},
}
