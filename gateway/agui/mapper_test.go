package agui

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/daca-go/daca/graph/model"
)

func text(seq int, s string) *model.ChatChunk {
	return &model.ChatChunk{InstanceID: "chat-1", Seq: seq, Text: s, Status: model.ChatStatusRunning}
}

func done(seq int, s string, st model.ChatStatus) *model.ChatChunk {
	c := text(seq, s)
	c.Done, c.Status = true, st
	return c
}

func call(seq int, s string, st model.ToolCallStatus, result string, approval model.ApprovalStatus) *model.ChatChunk {
	c := text(seq, s)
	id := "c1"
	c.ToolCall = &model.ToolCall{ID: &id, Name: "tools_create_note", Arguments: `{"text":"water"}`, Status: st}
	if result != "" {
		c.ToolCall.Result = &result
	}
	if approval != "" {
		c.ToolCall.Approval = &model.Approval{ID: "a1", InstanceID: "chat-1", Server: "tools", Tool: "create_note", Arguments: `{"text":"water"}`, Status: approval}
	}
	return c
}

func msgs(t *testing.T, js string) []Message {
	t.Helper()
	var in Input
	if err := json.Unmarshal([]byte(`{"messages":`+js+`}`), &in); err != nil {
		t.Fatal(err)
	}
	return in.Messages
}

// show renders events as TYPE:detail, one per element.
func show(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		d := e.Delta
		switch e.Type {
		case TextMessageStart:
			d = e.MessageID
		case ToolCallStart:
			d = e.ToolCallName + "/" + e.ParentMessageID
		case ToolCallResult:
			d = *e.Content
		case RunFinished:
			d = e.Outcome.Type
			for _, in := range e.Outcome.Interrupts {
				d += "/" + in.ID + "/" + in.ToolCallID
			}
		case RunError:
			d = e.Code
		case MessagesSnapshot:
			var parts []string
			for _, m := range e.Messages {
				var x struct {
					ID, Content string
				}
				json.Unmarshal(m, &x)
				parts = append(parts, x.ID+"="+x.Content)
			}
			d = strings.Join(parts, ",")
		}
		out[i] = e.Type + ":" + d
	}
	return out
}

func TestMapper(t *testing.T) {
	t.Parallel()
	approval := []*model.ChatChunk{
		call(1, "", model.ToolCallStatusRunning, "", ""),
		call(2, "", model.ToolCallStatusRunning, "", model.ApprovalStatusPending),
		call(3, "", model.ToolCallStatusRunning, "", model.ApprovalStatusApproved),
		call(4, "", model.ToolCallStatusCompleted, "noted", ""),
		text(5, "Done: noted"),
		done(6, "Done: noted", model.ChatStatusCompleted),
	}
	for _, tc := range []struct {
		name     string
		input    string // the messages the client sent
		answered map[string]bool
		pending  bool
		chunks   []*model.ChatChunk
		want     []string
	}{
		{"a reply, streamed", `[{"id":"u1","role":"user","content":"hi"}]`, nil, true,
			[]*model.ChatChunk{text(1, "He"), text(2, "Hello"), done(3, "Hello world", model.ChatStatusCompleted)},
			[]string{"TEXT_MESSAGE_START:chat-1", "TEXT_MESSAGE_CONTENT:He", "TEXT_MESSAGE_CONTENT:llo", "TEXT_MESSAGE_CONTENT: world", "TEXT_MESSAGE_END:", "RUN_FINISHED:success"}},
		{"a reconnect: only what the client lacks", `[{"id":"u1","role":"user","content":"hi"},{"id":"chat-1","role":"assistant","content":"Hello"}]`, nil, true,
			[]*model.ChatChunk{text(1, "He"), text(2, "Hello"), done(3, "Hello world", model.ChatStatusCompleted)},
			[]string{"TEXT_MESSAGE_START:chat-1", "TEXT_MESSAGE_CONTENT: world", "TEXT_MESSAGE_END:", "RUN_FINISHED:success"}},
		{"a reconnect after the end: nothing but the end", `[{"id":"chat-1","role":"assistant","content":"Hello world"}]`, nil, true,
			[]*model.ChatChunk{done(3, "Hello world", model.ChatStatusCompleted)},
			[]string{"RUN_FINISHED:success"}},
		{"a call waiting for approval interrupts the run", `[{"id":"u1","role":"user","content":"note"}]`, nil, true, approval,
			[]string{"TOOL_CALL_START:tools_create_note/chat-1", `TOOL_CALL_ARGS:{"text":"water"}`, "TOOL_CALL_END:", "RUN_FINISHED:interrupt/a1/chat-1-c1"}},
		{"the resumed run goes on after the answered interrupt",
			`[{"id":"u1","role":"user","content":"note"},{"id":"chat-1","role":"assistant","content":"","toolCalls":[{"id":"chat-1-c1","type":"function","function":{"name":"tools_create_note","arguments":"{}"}}]}]`,
			map[string]bool{"a1": true}, true, approval,
			[]string{"TOOL_CALL_RESULT:noted", "TEXT_MESSAGE_START:chat-1-1", "TEXT_MESSAGE_CONTENT:Done: noted", "TEXT_MESSAGE_END:", "RUN_FINISHED:success"}},
		{"an earlier turn's call of the same model id is another call",
			`[{"id":"chat-0","role":"assistant","content":"","toolCalls":[{"id":"chat-0-c1","type":"function","function":{"name":"x","arguments":"{}"}}]},{"id":"chat-0-c1-result","role":"tool","toolCallId":"chat-0-c1","content":"x"},{"id":"u1","role":"user","content":"note"}]`,
			nil, true, approval,
			[]string{"TOOL_CALL_START:tools_create_note/chat-1", `TOOL_CALL_ARGS:{"text":"water"}`, "TOOL_CALL_END:", "RUN_FINISHED:interrupt/a1/chat-1-c1"}},
		{"a request decided elsewhere does not interrupt", `[{"id":"u1","role":"user","content":"note"}]`, nil, false, approval,
			[]string{"TOOL_CALL_START:tools_create_note/chat-1", `TOOL_CALL_ARGS:{"text":"water"}`, "TOOL_CALL_END:", "TOOL_CALL_RESULT:noted",
				"TEXT_MESSAGE_START:chat-1-1", "TEXT_MESSAGE_CONTENT:Done: noted", "TEXT_MESSAGE_END:", "RUN_FINISHED:success"}},
		{"text before a tool call ends before it", `[]`, nil, true,
			[]*model.ChatChunk{text(1, "Let me see. "), call(2, "Let me see. ", model.ToolCallStatusCompleted, "3 mi", ""), done(3, "Let me see. 3 mi", model.ChatStatusCompleted)},
			[]string{"TEXT_MESSAGE_START:chat-1", "TEXT_MESSAGE_CONTENT:Let me see. ", "TEXT_MESSAGE_END:", "TOOL_CALL_START:tools_create_note/chat-1", `TOOL_CALL_ARGS:{"text":"water"}`, "TOOL_CALL_END:", "TOOL_CALL_RESULT:3 mi",
				"TEXT_MESSAGE_START:chat-1-1", "TEXT_MESSAGE_CONTENT:3 mi", "TEXT_MESSAGE_END:", "RUN_FINISHED:success"}},
		{"a reply that starts over: a snapshot", `[{"id":"u1","role":"user","content":"hi"}]`, nil, true,
			[]*model.ChatChunk{text(1, "Hello"), text(1001, "Bye"), done(1002, "Bye now", model.ChatStatusCompleted)},
			[]string{"TEXT_MESSAGE_START:chat-1", "TEXT_MESSAGE_CONTENT:Hello", "TEXT_MESSAGE_END:", "MESSAGES_SNAPSHOT:u1=hi,chat-1-1=Bye",
				"TEXT_MESSAGE_START:chat-1-1", "TEXT_MESSAGE_CONTENT: now", "TEXT_MESSAGE_END:", "RUN_FINISHED:success"}},
		{"a final reply shorter than what was shown: a snapshot", `[]`, nil, true,
			[]*model.ChatChunk{text(1, "Hello there"), done(2, "Hello", model.ChatStatusCompleted)},
			[]string{"TEXT_MESSAGE_START:chat-1", "TEXT_MESSAGE_CONTENT:Hello there", "TEXT_MESSAGE_END:", "MESSAGES_SNAPSHOT:chat-1-1=Hello", "RUN_FINISHED:success"}},
		{"a reconnect after a tool call: the text goes on in its own message",
			`[{"id":"u1","role":"user","content":"hi"},{"id":"chat-1","role":"assistant","content":"Let me see. ","toolCalls":[{"id":"chat-1-c1","type":"function","function":{"name":"tools_create_note","arguments":"{}"}}]},{"id":"chat-1-c1-result","role":"tool","toolCallId":"chat-1-c1","content":"3 mi"},{"id":"chat-1-1","role":"assistant","content":"3"}]`,
			nil, true,
			[]*model.ChatChunk{text(1, "Let me see. "), call(2, "Let me see. ", model.ToolCallStatusCompleted, "3 mi", ""), text(3, "Let me see. 3"), done(4, "Let me see. 3 mi", model.ChatStatusCompleted)},
			[]string{"TEXT_MESSAGE_START:chat-1-1", "TEXT_MESSAGE_CONTENT: mi", "TEXT_MESSAGE_END:", "RUN_FINISHED:success"}},
		{"a restart after a tool call keeps the call, empties the text", `[{"id":"u1","role":"user","content":"hi"}]`, nil, true,
			[]*model.ChatChunk{text(1, "Let me see. "), call(2, "Let me see. ", model.ToolCallStatusCompleted, "3 mi", ""), text(3, "Let me see. 3"), text(1001, "It is 3 mi")},
			[]string{"TEXT_MESSAGE_START:chat-1", "TEXT_MESSAGE_CONTENT:Let me see. ", "TEXT_MESSAGE_END:", "TOOL_CALL_START:tools_create_note/chat-1", `TOOL_CALL_ARGS:{"text":"water"}`, "TOOL_CALL_END:", "TOOL_CALL_RESULT:3 mi",
				"TEXT_MESSAGE_START:chat-1-1", "TEXT_MESSAGE_CONTENT:3", "TEXT_MESSAGE_END:", "MESSAGES_SNAPSHOT:u1=hi,chat-1=,chat-1-c1-result=3 mi,chat-1-2=It is 3 mi"}},
		{"stopped", `[]`, nil, true, []*model.ChatChunk{text(1, "Hel"), done(2, "Hel", model.ChatStatusTerminated)},
			[]string{"TEXT_MESSAGE_START:chat-1", "TEXT_MESSAGE_CONTENT:Hel", "TEXT_MESSAGE_END:", "RUN_FINISHED:cancelled"}},
		{"failed", `[]`, nil, true, []*model.ChatChunk{done(1, "", model.ChatStatusFailed)}, []string{"RUN_ERROR:TURN_FAILED"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := newMapper("chat-1", msgs(t, tc.input), tc.answered, func(string) bool { return tc.pending })
			var got []Event
			for _, c := range tc.chunks {
				evs, end := m.chunk(c)
				got = append(got, evs...)
				if end != nil {
					got = append(got, *end)
					break
				}
			}
			if g, w := strings.Join(show(got), "\n"), strings.Join(tc.want, "\n"); g != w {
				t.Fatalf("events:\n%s\nwant:\n%s", g, w)
			}
		})
	}
}

func TestResumeDecision(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status, payload string
		approve         bool
		reason          string
		bad             bool
	}{
		{"resolved", ``, true, "", false},
		{"resolved", `{"approved": true}`, true, "", false},
		{"resolved", `{"approved": false, "reason": "not now"}`, false, "not now", false},
		{"cancelled", ``, false, "cancelled by the user", false},
		{"resolved", `"yes"`, false, "", true},
		{"later", ``, false, "", true},
	} {
		approve, reason, err := ResumeEntry{InterruptID: "a1", Status: tc.status, Payload: json.RawMessage(tc.payload)}.Decision()
		if (err != nil) != tc.bad || err == nil && (approve != tc.approve || reason != tc.reason) {
			t.Errorf("%s %s: %v %q %v", tc.status, tc.payload, approve, reason, err)
		}
	}
}
