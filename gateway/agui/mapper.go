package agui

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/daca-go/daca/graph/model"
)

// mapper turns a chat turn's stream (chatStream's chunks) into AG-UI
// events, showing the client only what it does not have yet: what it has is
// read from the messages it sent (the turn's assistant messages, their tool
// calls, the tool results), so a client that sends its thread again — a
// reconnect, or the run that resumes an interrupt — goes on where it was,
// without a gap and without a repeat, on any replica.
//
// The turn's reply is written in assistant messages whose ids are the
// turn's (instance) id, then id-1, id-2, …: a new one after each tool call
// (the call hangs from the message before it, parentMessageId, and its
// result follows that message), as agent front ends show them. A call's id
// is the turn's id, "-" and the model's id for it (unique in the thread);
// its result's message id that and "-result". A tool call
// that waits for a decision ends the run with an interrupt (its id the
// approval's), unless it was answered in this request or is no longer
// pending.
type mapper struct {
	turn      string // the instance id
	input     []Message
	text      string          // the reply as the client has it (its segments joined)
	seg       int             // the segment text goes to: 0 is the turn's id, n is id-n
	afterTool bool            // a tool call hangs from seg: more text opens the next
	open      bool            // a text message started and not ended
	calls     map[string]bool // tool calls the client has
	results   map[string]bool // tool calls whose result the client has
	answered  map[string]bool // approvals answered by this request
	// pending reports whether an approval still waits (a replayed chunk may
	// show a request that was decided since).
	pending func(approvalID string) bool
	// added are the messages this run added (assistant segments, tool
	// results), in order, and extra the tool calls it hung from segments
	// the client had: for a snapshot.
	added []map[string]any
	extra map[string][]ToolCallRef
}

func newMapper(instanceID string, input []Message, answered map[string]bool, pending func(string) bool) *mapper {
	m := &mapper{turn: instanceID, input: input, calls: map[string]bool{}, results: map[string]bool{}, answered: answered, pending: pending, extra: map[string][]ToolCallRef{}}
	for _, msg := range input {
		if n, ok := m.segment(msg.ID); ok && msg.Role == "assistant" {
			m.text += msg.Text()
			m.seg, m.afterTool = n, len(msg.ToolCalls) > 0
			for _, c := range msg.ToolCalls {
				m.calls[c.ID] = true
			}
		} else if msg.Role == "tool" && m.calls[msg.ToolCallID] { // a result of this turn's
			m.results[msg.ToolCallID] = true
		}
	}
	return m
}

// segID is the id of the turn's n-th assistant message.
func (m *mapper) segID(n int) string {
	if n == 0 {
		return m.turn
	}
	return fmt.Sprintf("%s-%d", m.turn, n)
}

// segment reports which of the turn's assistant messages id is.
func (m *mapper) segment(id string) (int, bool) {
	if id == m.turn {
		return 0, true
	}
	rest, ok := strings.CutPrefix(id, m.turn+"-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil && n > 0
}

// chunk returns the events of one chunk, and the run's last event when the
// chunk ends the run (the turn's end, or a call waiting for a decision).
func (m *mapper) chunk(c *model.ChatChunk) (evs []Event, end *Event) {
	evs = m.reply(evs, c.Text, c.Done && c.Status == model.ChatStatusCompleted)
	if tc := c.ToolCall; tc != nil {
		var wait *Interrupt
		evs, wait = m.toolCall(evs, c.Seq, tc)
		if wait != nil {
			evs = m.closeText(evs)
			return evs, &Event{Type: RunFinished, Outcome: &Outcome{Type: "interrupt", Interrupts: []Interrupt{*wait}}}
		}
	}
	if !c.Done {
		return evs, nil
	}
	evs = m.closeText(evs)
	switch c.Status {
	case model.ChatStatusCompleted:
		return evs, &Event{Type: RunFinished, Outcome: &Outcome{Type: "success"}}
	case model.ChatStatusTerminated:
		return evs, &Event{Type: RunFinished, Outcome: &Outcome{Type: "cancelled"}}
	case model.ChatStatusFailed:
		return evs, &Event{Type: RunError, Code: "TURN_FAILED", Message: "the chat turn failed"}
	default: // not an end: a stream cut short
		return evs, &Event{Type: RunError, Code: "UNAVAILABLE", Message: "the stream ended while the turn was " + string(c.Status) + ": send the same input again to go on"}
	}
}

// reply adds the text the client does not have. A reply that starts over
// (or a client whose text is not the reply's start) gets a snapshot of the
// thread with the reply as it is now; final: text is the whole reply.
func (m *mapper) reply(evs []Event, text string, final bool) []Event {
	switch {
	case text == m.text:
		return evs
	case strings.HasPrefix(text, m.text):
		if !m.open {
			if m.afterTool {
				m.seg, m.afterTool = m.seg+1, false
			}
			evs = append(evs, Event{Type: TextMessageStart, MessageID: m.segID(m.seg), Role: "assistant"})
			m.open = true
			m.added = append(m.added, map[string]any{"id": m.segID(m.seg), "role": "assistant", "content": ""})
		}
		evs = append(evs, Event{Type: TextMessageContent, MessageID: m.segID(m.seg), Delta: text[len(m.text):]})
		m.text = text
		return evs
	case strings.HasPrefix(m.text, text) && !final:
		return evs // a replayed piece the client has already
	}
	evs = m.closeText(evs)
	m.text = text
	return append(evs, Event{Type: MessagesSnapshot, Messages: m.snapshot()})
}

func (m *mapper) closeText(evs []Event) []Event {
	if !m.open {
		return evs
	}
	m.open = false
	return append(evs, Event{Type: TextMessageEnd, MessageID: m.segID(m.seg)})
}

// toolCall adds a call the client does not have (start, arguments, end)
// and its result once there is one; wait is the interrupt when the call
// waits for a decision the client has not given.
func (m *mapper) toolCall(evs []Event, seq int, tc *model.ToolCall) (_ []Event, wait *Interrupt) {
	// The model names a call uniquely within its turn only; AG-UI's ids are
	// the thread's.
	id := m.turn + "-" + deref(tc.ID)
	if tc.ID == nil || *tc.ID == "" {
		id = fmt.Sprintf("%s-call-%d", m.turn, seq)
	}
	if !m.calls[id] {
		evs = m.closeText(evs)
		parent := m.segID(m.seg)
		evs = append(evs, Event{Type: ToolCallStart, ToolCallID: id, ToolCallName: tc.Name, ParentMessageID: parent})
		if tc.Arguments != "" {
			evs = append(evs, Event{Type: ToolCallArgs, ToolCallID: id, Delta: tc.Arguments})
		}
		evs = append(evs, Event{Type: ToolCallEnd, ToolCallID: id})
		m.calls[id], m.afterTool = true, true
		ref := ToolCallRef{ID: id, Type: "function"}
		ref.Function.Name, ref.Function.Arguments = tc.Name, tc.Arguments
		m.hang(parent, ref)
	}
	if (tc.Status == model.ToolCallStatusCompleted || tc.Status == model.ToolCallStatusFailed) && tc.Result != nil && !m.results[id] {
		evs = m.closeText(evs)
		msgID := id + "-result"
		evs = append(evs, Event{Type: ToolCallResult, MessageID: msgID, ToolCallID: id, Content: tc.Result, Role: "tool"})
		m.results[id] = true
		m.added = append(m.added, map[string]any{"id": msgID, "role": "tool", "toolCallId": id, "content": *tc.Result})
	}
	a := tc.Approval
	if a == nil || a.Status != model.ApprovalStatusPending || m.answered[a.ID] || m.results[id] || !m.pending(a.ID) {
		return evs, nil
	}
	return evs, &Interrupt{
		ID:             a.ID,
		Reason:         "tool_approval",
		Message:        fmt.Sprintf("The agent wants to call %s (%s) with %s", a.Tool, a.Server, a.Arguments),
		ToolCallID:     id,
		ResponseSchema: approvalSchema,
		ExpiresAt:      a.ExpiresAt.UTC().Format(time.RFC3339),
		Metadata:       map[string]any{"instanceId": a.InstanceID, "server": a.Server, "tool": a.Tool, "arguments": a.Arguments},
	}
}

// hang records a call hung from the message parent, for a snapshot (the
// client makes the message when it has none).
func (m *mapper) hang(parent string, ref ToolCallRef) {
	for _, msg := range m.added {
		if msg["id"] == parent {
			calls, _ := msg["toolCalls"].([]ToolCallRef)
			msg["toolCalls"] = append(calls, ref)
			return
		}
	}
	for _, msg := range m.input {
		if msg.ID == parent {
			m.extra[parent] = append(m.extra[parent], ref)
			return
		}
	}
	m.added = append(m.added, map[string]any{"id": parent, "role": "assistant", "content": "", "toolCalls": []ToolCallRef{ref}})
}

// snapshot is the thread as the client should show it after the reply
// started over: every message it has, this turn's earlier text gone (a
// message with tool calls stays, emptied), and the reply as it is now in a
// new message.
func (m *mapper) snapshot() []json.RawMessage {
	out := make([]json.RawMessage, 0, len(m.input)+len(m.added)+1)
	for _, msg := range m.input {
		if _, ok := m.segment(msg.ID); !ok || msg.Role != "assistant" {
			out = append(out, msg.Raw)
			continue
		}
		if calls := append(append([]ToolCallRef(nil), msg.ToolCalls...), m.extra[msg.ID]...); len(calls) > 0 {
			out = append(out, encode(map[string]any{"id": msg.ID, "role": "assistant", "content": "", "toolCalls": calls}))
		}
	}
	kept := m.added[:0]
	for _, msg := range m.added {
		if msg["role"] == "assistant" {
			if _, ok := msg["toolCalls"]; !ok {
				continue // text only: the new message holds it
			}
			msg["content"] = ""
		}
		kept = append(kept, msg)
		out = append(out, encode(msg))
	}
	m.added = kept
	m.seg, m.afterTool = m.seg+1, false
	now := map[string]any{"id": m.segID(m.seg), "role": "assistant", "content": m.text}
	m.added = append(m.added, now)
	return append(out, encode(now))
}

func encode(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}
func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
