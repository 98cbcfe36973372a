package llm

import (
	"context"
	"encoding/json"
	"strings"

	openai "github.com/sashabaranov/go-openai"

	"github.com/daca-go/daca/internal/apperr"
)

// ToolSpec is a tool offered to the model: a function with a JSON Schema of
// its arguments.
type ToolSpec struct {
	Name        string
	Description string
	Parameters  json.RawMessage // a JSON Schema object
}

// ToolCall is a call of a tool the model asked for.
type ToolCall struct {
	ID        string
	Name      string
	Arguments string // JSON, as the model wrote it
}

// Answer is what the model answered in one round: text, and the tools it
// wants called before it goes on (none: Text is its last word).
type Answer struct {
	Text      string
	ToolCalls []ToolCall
	// Usage is what the provider reported for the call (zero when it
	// reports nothing, as some do for a streamed reply).
	Usage Usage
}

// Usage is the tokens of one LLM call as the provider counts them.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// TimeTool is the built-in tool every chat turn offers.
var TimeTool = ToolSpec{Name: "get_current_time", Description: "Returns the current date and time in UTC.",
	Parameters: json.RawMessage(`{"type":"object","properties":{}}`)}

// Round asks the model once, with the conversation so far (msgs: history,
// the user's message, earlier rounds' calls and their results) and the
// tools it may call, streaming its text through on (nil: not streamed). It
// is one step of a durable tool loop: the caller runs the tools and asks
// again. An empty answer without tool calls is an error.
func (c *Client) Round(ctx context.Context, system string, msgs []Message, tools []ToolSpec, on func(string)) (Answer, error) {
	req := openai.ChatCompletionRequest{Model: c.cfg.Model, Messages: conversation(system, msgs)}
	for _, t := range tools {
		req.Tools = append(req.Tools, openai.Tool{Type: openai.ToolTypeFunction,
			Function: &openai.FunctionDefinition{Name: t.Name, Description: t.Description, Parameters: t.Parameters}})
	}
	var msg openai.ChatCompletionMessage
	var u Usage
	var err error
	if on != nil {
		msg, u, err = c.streamOnce(ctx, req, 0, on)
	} else {
		msg, u, err = c.once(ctx, req)
	}
	if err != nil {
		return Answer{}, err
	}
	a := Answer{Text: msg.Content, Usage: u}
	for _, tc := range msg.ToolCalls {
		a.ToolCalls = append(a.ToolCalls, ToolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
	}
	if len(a.ToolCalls) == 0 && strings.TrimSpace(a.Text) == "" {
		return Answer{}, apperr.New(apperr.Unavailable, "the language model returned an empty reply")
	}
	return a, nil
}

// conversation is the provider's form of msgs after the instructions:
// assistant messages keep their tool calls, tool results name their call.
func conversation(system string, msgs []Message) []openai.ChatCompletionMessage {
	out := []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleSystem, Content: system}}
	for _, m := range msgs {
		switch m.Role {
		case RoleTool:
			out = append(out, openai.ChatCompletionMessage{Role: openai.ChatMessageRoleTool, Content: m.Content, ToolCallID: m.ToolCallID, Name: m.Name})
		case "assistant":
			am := openai.ChatCompletionMessage{Role: openai.ChatMessageRoleAssistant, Content: m.Content}
			for i, tc := range m.ToolCalls {
				idx := i
				am.ToolCalls = append(am.ToolCalls, openai.ToolCall{Index: &idx, ID: tc.ID, Type: openai.ToolTypeFunction,
					Function: openai.FunctionCall{Name: tc.Name, Arguments: tc.Arguments}})
			}
			out = append(out, am)
		default:
			out = append(out, openai.ChatCompletionMessage{Role: openai.ChatMessageRoleUser, Content: m.Content})
		}
	}
	return out
}
