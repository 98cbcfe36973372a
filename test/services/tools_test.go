package services

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dapr/durabletask-go/workflow"
	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// TestToolsThroughDapr: chat-service's sidecar knows the reference tool
// server as the MCPServer "tools" (components/mcpserver-tools.yaml): Dapr's
// ListTools workflow lists its tools with their annotations, and each tool
// runs as the CallTool workflow, through the token from the secret store,
// with notes kept per user in the tool server's state.
func TestToolsThroughDapr(t *testing.T) {
	st := stacktest.Stack(t)
	run := func(t *testing.T, name string, in any, out any) { t.Helper(); runWorkflow(t, st, name, in, out) }
	prefix := "dapr.internal.mcp." + contract.ToolServer + "."
	var list struct {
		Tools []struct {
			Name        string         `json:"name"`
			Description string         `json:"description"`
			InputSchema map[string]any `json:"inputSchema"`
			Annotations struct {
				ReadOnlyHint bool `json:"readOnlyHint"`
			} `json:"annotations"`
		} `json:"tools"`
	}
	run(t, prefix+"ListTools", nil, &list)
	readOnly := map[string]bool{}
	for _, tool := range list.Tools {
		readOnly[tool.Name] = tool.Annotations.ReadOnlyHint
		if tool.Description == "" || tool.InputSchema == nil {
			t.Errorf("%s: no description or schema", tool.Name)
		}
	}
	if len(readOnly) != 5 || !readOnly["convert_units"] || readOnly["create_note"] || readOnly["delete_note"] {
		t.Fatalf("tools %v", readOnly)
	}

	type result struct {
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
		IsError bool `json:"isError"`
	}
	text := func(r result) string {
		var b strings.Builder
		for _, c := range r.Content {
			b.WriteString(c.Text)
		}
		return b.String()
	}
	call := func(tool string, args map[string]any) result {
		var r result
		run(t, prefix+"CallTool."+tool, map[string]any{"arguments": args}, &r)
		return r
	}
	if r := call("convert_units", map[string]any{"value": 5, "from": "km", "to": "m"}); r.IsError || text(r) != "5 km = 5000 m" {
		t.Fatalf("convert_units: %+v", r)
	}
	user := unique("tools-user")
	if r := call("create_note", map[string]any{contract.ToolUserArg: user, "text": "water the plants"}); r.IsError {
		t.Fatalf("create_note: %+v", r)
	}
	if r := call("list_notes", map[string]any{contract.ToolUserArg: user}); r.IsError || !strings.Contains(text(r), "water the plants") {
		t.Fatalf("list_notes: %+v", r)
	}
	if r := call("create_note", map[string]any{"text": "no user"}); !r.IsError {
		t.Fatalf("create_note without a user: %+v; want isError", r)
	}
}

// TestTurnCallsTools: a chat turn whose message asks for two tools calls
// them in two rounds — each a step of the turn's workflow, the MCP tool run
// by Dapr on the tool server — and its reply has both results; the note was
// kept for the turn's user (the one chat-service passed, not the model).
func TestTurnCallsTools(t *testing.T) {
	st := stacktest.Stack(t)
	user := unique("tool-turn")
	r := stacktest.Do(t, http.MethodPost, chatURL(st, "chat"),
		map[string]any{"user_id": user, "text": "Please convert 5 km to mi and remind me to buy milk"}, token(st)...)
	if r.Status != http.StatusOK {
		t.Fatalf("chat: %d %s", r.Status, r.Body)
	}
	reply, _ := r.JSON["reply"].(string)
	for _, want := range []string{"tools_convert_units answered: 5 km = 3.106856 mi", "tools_create_note answered: noted"} {
		if !strings.Contains(reply, want) {
			t.Errorf("reply %q lacks %q", reply, want)
		}
	}
	// The history keeps both calls, in order, on the assistant's entry.
	session, _ := r.JSON["metadata"].(map[string]any)["session_id"].(string)
	h := waitHistory(t, st, session, 2)
	calls, _ := h[1]["tool_calls"].([]any)
	if len(calls) != 2 {
		t.Fatalf("the reply's entry has tool calls %v; want 2", h[1]["tool_calls"])
	}
	for i, name := range []string{"tools_convert_units", "tools_create_note"} {
		c, _ := calls[i].(map[string]any)
		if c["name"] != name || c["server"] != contract.ToolServer || c["status"] != string(contract.ToolCompleted) || c["result"] == "" {
			t.Errorf("tool call %d: %v; want %s on %s, completed with a result", i+1, c, name, contract.ToolServer)
		}
	}
	// The note is the turn's user's.
	var notes struct {
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
	}
	runWorkflow(t, st, "dapr.internal.mcp."+contract.ToolServer+".CallTool.list_notes",
		map[string]any{"arguments": map[string]any{contract.ToolUserArg: user}}, &notes)
	if len(notes.Content) == 0 || !strings.Contains(notes.Content[0].Text, "buy milk") {
		t.Fatalf("notes of %s: %+v", user, notes)
	}
}

// TestToolServerDown: with the tool server down, a turn that calls one of
// its tools still completes — the model gets an error result and says so —
// and once the server is back, its tools work again without a restart of
// chat-service or its sidecar.
func TestToolServerDown(t *testing.T) {
	st := stacktest.Stack(t)
	ask := func(text string) string {
		t.Helper()
		r := stacktest.Do(t, http.MethodPost, chatURL(st, "chat"), map[string]any{"user_id": unique("down"), "text": text}, token(st)...)
		if r.Status != http.StatusOK {
			t.Fatalf("chat: %d %s", r.Status, r.Body)
		}
		reply, _ := r.JSON["reply"].(string)
		return reply
	}
	if err := st.Kill(contract.ToolApp); err != nil {
		t.Fatal(err)
	}
	if reply := ask("convert 2 km to m"); !strings.Contains(reply, "tools_convert_units answered: error") {
		t.Fatalf("with the tool server down: %q; want the tool's error in the reply", reply)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := st.Restart(ctx, contract.ToolApp); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 30*time.Second, "the tool answering again", func() error {
		if reply := ask("convert 2 km to m"); !strings.Contains(reply, "2 km = 2000 m") {
			return fmt.Errorf("reply %q", reply)
		}
		return nil
	})
}

// runWorkflow runs the workflow name with in on chat-service's sidecar (as
// chat-service's own call: Dapr's MCP workflows live there), waits until it
// completes and decodes its output into out.
func runWorkflow(t *testing.T, st *stack.Stack, name string, in, out any) {
	t.Helper()
	c, err := dapr.NewClientWithAddress(st.App(contract.ChatApp).SidecarGRPC())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WithAuthToken(st.APIToken)
	wf := workflow.NewClient(c.GrpcClientConn())
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var id string
	testkit.WaitFor(t, 30*time.Second, name+" scheduled", func() error {
		var err error
		id, err = wf.ScheduleWorkflow(ctx, name, workflow.WithInput(in))
		return err
	})
	meta, err := wf.WaitForWorkflowCompletion(ctx, id, workflow.WithFetchPayloads(true))
	if err != nil {
		t.Fatal(err)
	}
	if meta.RuntimeStatus != workflow.StatusCompleted {
		t.Fatalf("%s ended %s (%v)", name, meta.String(), meta.FailureDetails)
	}
	if err := json.Unmarshal([]byte(meta.Output.GetValue()), out); err != nil {
		t.Fatalf("%s output %s: %v", name, meta.Output.GetValue(), err)
	}
}
