package turn

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dapr/durabletask-go/workflow"

	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/testkit"
	"github.com/daca-go/daca/internal/llm"
)

// scripted answers each round from a script (the last entry repeats), and
// records what each round was given.
type scripted struct {
	mu     sync.Mutex
	script []llm.Answer
	rounds [][]llm.Message
	tools  [][]llm.ToolSpec
}

func (s *scripted) Round(_ context.Context, _ string, msgs []llm.Message, tools []llm.ToolSpec, on func(string)) (llm.Answer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rounds = append(s.rounds, msgs)
	s.tools = append(s.tools, tools)
	a := s.script[min(len(s.rounds), len(s.script))-1]
	if on != nil && a.Text != "" {
		on(a.Text)
	}
	return a, nil
}

type fixedTools []Tool

func (f fixedTools) Tools(context.Context) []Tool { return append([]Tool{Builtin}, f...) }

// echoTool is an MCP tool "echo" of server "tools" that acts for a user and
// needs a text.
func echoTool(t *testing.T) Tool {
	t.Helper()
	tool, err := fromMCP("tools", mcpTool{Name: "echo", Description: "echoes",
		InputSchema: map[string]any{"type": "object", "required": []any{"text", contract.ToolUserArg},
			"properties": map[string]any{"text": map[string]any{"type": "string"}, contract.ToolUserArg: map[string]any{"type": "string"},
				contract.ToolCallArg: map[string]any{"type": "string"}}}})
	if err != nil {
		t.Fatal(err)
	}
	tool.Name = "tools_echo"
	return tool
}

// mcpEcho is the workflow Dapr's MCP engine runs for tools/echo, here on
// the test's engine; it counts its executions.
func mcpEcho(runs *atomic.Int32, long bool) func(*workflow.Registry) error {
	return func(r *workflow.Registry) error {
		return r.AddWorkflowN(MCPCallTool("tools", "echo"), func(ctx *workflow.WorkflowContext) (any, error) {
			var in mcpInput
			if err := ctx.GetInput(&in); err != nil {
				return nil, err
			}
			if !ctx.IsReplaying() {
				runs.Add(1)
			}
			text := "echo " + in.Arguments["text"].(string) + " for " + in.Arguments[contract.ToolUserArg].(string)
			if id, _ := in.Arguments[contract.ToolCallArg].(string); id != ctx.ID() {
				return nil, fmt.Errorf("call id %q; want the workflow's own, %s", id, ctx.ID())
			}
			if long {
				text += strings.Repeat("é", 400)
			}
			return map[string]any{"content": []map[string]any{{"type": "text", "text": text}}}, nil
		})
	}
}

// TestToolLoop: each round of the model and each tool call is a step of its
// own: the built-in tool runs as an activity, an MCP tool as the workflow
// Dapr runs it as, with the turn's user (never the model's); a call with
// arguments against the schema or of an unknown tool is not sent, and the
// model gets an error naming why; the next round sees every result; the
// output keeps the calls in order.
func TestToolLoop(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	m := &scripted{script: []llm.Answer{
		{Text: "Let me look. ", ToolCalls: []llm.ToolCall{
			{ID: "c1", Name: "get_current_time", Arguments: "{}"},
			{ID: "c2", Name: "tools_echo", Arguments: `{"text":"hi","_user_id":"mallory","_call_id":"forged"}`},
			{ID: "c3", Name: "tools_echo", Arguments: `{"text":7}`},
			{ID: "c4", Name: "rm_rf", Arguments: `{}`},
		}},
		{Text: "Done."},
	}}
	clock := time.Date(2026, 12, 5, 9, 30, 0, 0, time.UTC)
	a := &Activities{Memory: memoryOf(&memory{}), Publisher: &published{}, Model: m, State: &state{}, Tools: fixedTools{echoTool(t)},
		Now: func() time.Time { return clock }, Log: testkit.Quiet()}
	c := engine(t, a, mcpEcho(&runs, false))
	meta := run(t, c, "chat-loop-1", Input{UserID: "ana", SessionID: "s1", Text: "what time is it, and echo hi"})
	if meta.String() != "COMPLETED" {
		t.Fatalf("status %s (%v)", meta.String(), meta.FailureDetails)
	}
	var out Output
	json.Unmarshal([]byte(meta.Output.GetValue()), &out)
	if out.Reply != "Let me look. Done." {
		t.Fatalf("reply %q", out.Reply)
	}
	want := []struct {
		result string
		failed bool
	}{
		{"2026-12-05 09:30:00 UTC", false},
		{"echo hi for ana", false},
		{"error: the arguments do not match the tool's input schema", true},
		{`error: unknown tool "rm_rf"`, true},
	}
	if len(out.ToolCalls) != len(want) {
		t.Fatalf("%d tool calls; want %d: %+v", len(out.ToolCalls), len(want), out.ToolCalls)
	}
	for i, w := range want {
		got := out.ToolCalls[i]
		if !strings.HasPrefix(got.Result, w.result) || got.Failed != w.failed {
			t.Errorf("call %d: %q (failed %v); want %q (failed %v)", i+1, got.Result, got.Failed, w.result, w.failed)
		}
	}
	if !strings.Contains(out.ToolCalls[2].Result, "text") {
		t.Errorf("the schema error does not name the field: %q", out.ToolCalls[2].Result)
	}
	if runs.Load() != 1 {
		t.Errorf("the MCP tool ran %d times; want once (the invalid call is not sent)", runs.Load())
	}
	if len(m.rounds) != 2 {
		t.Fatalf("%d rounds; want 2", len(m.rounds))
	}
	second := m.rounds[1]
	var results []string
	for _, msg := range second {
		if msg.Role == llm.RoleTool {
			results = append(results, msg.ToolCallID+"="+msg.Content)
		}
	}
	if len(results) != 4 || !strings.HasPrefix(results[0], "c1=2026-12-05") || results[1] != "c2=echo hi for ana" {
		t.Fatalf("the second round got the results %v", results)
	}
	for _, spec := range m.tools[0] {
		if spec.Name == "tools_echo" && (strings.Contains(string(spec.Parameters), contract.ToolUserArg) || strings.Contains(string(spec.Parameters), contract.ToolCallArg)) {
			t.Fatalf("the model is offered the user argument: %s", spec.Parameters)
		}
	}
}

// TestToolLoopLimits: a model that never stops calling tools gets
// MaxSteps rounds, then the turn ends with a reply that says so; a tool
// result longer than ToolResultMax is cut and marked.
func TestToolLoopLimits(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	m := &scripted{script: []llm.Answer{{ToolCalls: []llm.ToolCall{{ID: "c", Name: "tools_echo", Arguments: `{"text":"again"}`}}}}}
	pub := &published{}
	a := &Activities{Memory: memoryOf(&memory{}), Publisher: pub, Model: m, Tools: fixedTools{echoTool(t)}, Log: testkit.Quiet()}
	c := engine(t, a, mcpEcho(&runs, true))
	meta := run(t, c, "chat-loop-2", Input{UserID: "ana", SessionID: "s1", Text: "loop", MaxSteps: 3, ToolResultMax: 300})
	// No round answered without tool calls: save_conversation saved the turn.
	if got := activitiesOf(t, c, "chat-loop-2"); len(got) == 0 || got[len(got)-1] != ActSave {
		t.Fatalf("activities %v; want %s last", got, ActSave)
	}
	if ev := pub.list(); len(ev) != 1 || !strings.Contains(ev[0].ev.AssistantReply, "stopped after 3 steps") || len(ev[0].ev.ToolCalls) != 3 {
		t.Fatalf("published %+v", ev)
	}
	var out Output
	json.Unmarshal([]byte(meta.Output.GetValue()), &out)
	if meta.String() != "COMPLETED" || !strings.Contains(out.Reply, "stopped after 3 steps") {
		t.Fatalf("status %s, reply %q", meta.String(), out.Reply)
	}
	if len(m.rounds) != 3 || runs.Load() != 3 || len(out.ToolCalls) != 3 {
		t.Fatalf("%d rounds, %d tool runs, %d calls; want 3 each", len(m.rounds), runs.Load(), len(out.ToolCalls))
	}
	r := out.ToolCalls[0].Result
	if len(r) > 300+60 || !strings.Contains(r, "[cut: the result was longer than 300 bytes]") || !strings.HasPrefix(r, "echo again for ana") {
		t.Fatalf("a long result: %d bytes %q", len(r), r)
	}
}

func memoryOf(m *memory) api.Memory { return api.Memory{Caller: m} }

// TestToolTimeout: an MCP call that outlives the turn's ToolTimeout is
// stopped (its workflow terminated by tool_deadline) and the model gets
// an error that says so; the turn goes on to a reply.
func TestToolTimeout(t *testing.T) {
	t.Parallel()
	m := &scripted{script: []llm.Answer{{ToolCalls: []llm.ToolCall{{ID: "c", Name: "tools_echo", Arguments: `{"text":"slow"}`}}}, {Text: "Done."}}}
	a := &Activities{Memory: memoryOf(&memory{}), Publisher: &published{}, Model: m, Tools: fixedTools{echoTool(t)}, Log: testkit.Quiet()}
	slow := func(r *workflow.Registry) error {
		return r.AddWorkflowN(MCPCallTool("tools", "echo"), func(ctx *workflow.WorkflowContext) (any, error) {
			return nil, ctx.CreateTimer(time.Hour).Await(nil) // never answers in time
		})
	}
	c := engine(t, a, slow)
	a.Stop = func(ctx context.Context, id string) error { return c.TerminateWorkflow(ctx, id) }
	start := time.Now()
	meta := run(t, c, "chat-timeout-1", Input{UserID: "ana", SessionID: "s1", Text: "slow", ToolTimeout: time.Second})
	var out Output
	json.Unmarshal([]byte(meta.Output.GetValue()), &out)
	if meta.String() != "COMPLETED" || out.Reply != "Done." || len(out.ToolCalls) != 1 {
		t.Fatalf("status %s, reply %q, calls %+v", meta.String(), out.Reply, out.ToolCalls)
	}
	if r := out.ToolCalls[0].Result; r != "error: the tool did not answer within 1s" || !out.ToolCalls[0].Failed {
		t.Fatalf("the call's result %q", r)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("the turn took %s", d)
	}
}
