package turn

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dapr/durabletask-go/workflow"
	"github.com/google/jsonschema-go/jsonschema"
	"golang.org/x/sync/singleflight"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/llm"
)

// Tool is a tool the model may call: the built-in get_current_time, or a
// tool of an MCP server that chat-service's sidecar runs (Dapr's MCPServer).
type Tool struct {
	Name        string // as the model knows it: unique, ^[a-zA-Z0-9_-]{1,64}$
	Server      string // the MCPServer; "" for the built-in tool
	Tool        string // the server's own name of the tool
	Description string
	Schema      json.RawMessage // the arguments the model gives (without contract.ToolUserArg)
	ReadOnly    bool            // MCP's readOnlyHint
	ForUser     bool            // chat-service passes the turn's user (contract.ToolUserArg)
	ForCall     bool            // chat-service passes the call's id (contract.ToolCallArg)
	Approval    bool            // a call waits for a user's decision (Policy)

	resolved *jsonschema.Resolved // Schema, for checking arguments; nil: not checked
}

// Builtin is the built-in tool (run by the activity ActRunTool).
var Builtin = Tool{Name: llm.TimeTool.Name, Tool: llm.TimeTool.Name, Description: llm.TimeTool.Description,
	Schema: llm.TimeTool.Parameters, ReadOnly: true}

// MCPCallTool is the workflow of Dapr's MCP engine that calls tool of
// server (its input {"arguments": …}, its output MCP's CallToolResult).
func MCPCallTool(server, tool string) string {
	return "dapr.internal.mcp." + server + ".CallTool." + tool
}

func mcpListTools(server string) string { return "dapr.internal.mcp." + server + ".ListTools" }

// Catalog is what chat-service offers the model: the built-in tool and every
// tool of every MCPServer of its sidecar, listed through Dapr (the
// ListTools workflow) at start and again when the list is older than
// Refresh. A server that cannot be listed never fails a turn; it is listed
// again sooner, RetryDown after the failed listing (a tool server
// restarting beside a chat-service that starts, say). Meanwhile it keeps
// the tools it listed last, for at most KeepDown after that listing: a
// listing is a workflow, and one placed on a chat-service replica that is
// stopping times out although the server is up (seen in the cluster's
// rolling restarts: a replica that dropped its tools answered tool requests
// without them, silently, until its next listing); a call to a server that is
// really down fails as a tool step does, and the model is told. A server
// never listed, or down for longer, has no tools (said in the log once
// until it lists again).
type Catalog struct {
	// Servers names the MCPServers of the sidecar (its metadata).
	Servers func(ctx context.Context) ([]string, error)
	// Workflows runs the ListTools workflows.
	Workflows interface {
		ScheduleWorkflow(ctx context.Context, orchestrator string, opts ...workflow.NewWorkflowOptions) (string, error)
		WaitForWorkflowCompletion(ctx context.Context, id string, opts ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error)
		PurgeWorkflowState(ctx context.Context, id string, opts ...workflow.PurgeOptions) error
	}
	Refresh   time.Duration // default a minute
	RetryDown time.Duration // default 5 s (at most Refresh)
	KeepDown  time.Duration // default 5 minutes
	Policy    Policy        // which tools' calls wait for a decision
	Log       *slog.Logger

	once   singleflight.Group
	mu     sync.Mutex
	tools  []Tool
	at     time.Time            // when the tools were listed (zero: never)
	stale  time.Time            // when the list is to be listed again
	down   map[string]bool      // servers whose listing failed: their last tools offered still (logged once each way)
	listed map[string]time.Time // when each server was last listed
}

// Tools returns the tools. The first call lists them (one listing at a
// time; the others wait for it); when the list is older than Refresh, it
// is listed again in the background and the call answers the list it has,
// so no turn waits for a listing.
func (c *Catalog) Tools(ctx context.Context) []Tool {
	c.mu.Lock()
	listed, fresh, tools := !c.at.IsZero(), time.Now().Before(c.stale), c.tools
	c.mu.Unlock()
	if c.Servers == nil || fresh {
		return append([]Tool{Builtin}, tools...)
	}
	list := c.once.DoChan("list", func() (any, error) { return c.list(context.WithoutCancel(ctx)), nil })
	if listed {
		return append([]Tool{Builtin}, tools...)
	}
	return append([]Tool{Builtin}, (<-list).Val.([]Tool)...)
}

// list lists every server's tools and keeps them.
func (c *Catalog) list(ctx context.Context) []Tool {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	servers, err := c.Servers(ctx)
	if err != nil {
		c.Log.Warn("the sidecar's MCP servers could not be read; keeping the tools listed before", "err", err)
		c.mu.Lock()
		defer c.mu.Unlock()
		c.at = time.Now()
		c.stale = c.at.Add(c.retryDown())
		return c.tools
	}
	slices.Sort(servers)
	var tools []Tool
	taken := map[string]bool{Builtin.Name: true}
	down := map[string]bool{} // of the servers down: whether their last tools are kept
	c.mu.Lock()
	before, lastListed := c.tools, maps.Clone(c.listed)
	c.mu.Unlock()
	if lastListed == nil {
		lastListed = map[string]time.Time{}
	}
	for _, s := range servers {
		listed, err := c.listServer(ctx, s)
		if err != nil {
			kept := time.Since(lastListed[s]) < c.keepDown()
			down[s] = kept
			c.mu.Lock()
			wasKept, known := c.down[s]
			c.mu.Unlock()
			if kept {
				for _, t := range before {
					if t.Server == s {
						taken[t.Name] = true
						tools = append(tools, t)
					}
				}
			}
			switch {
			case known && wasKept == kept:
			case kept:
				c.Log.Warn("MCP server could not be listed: the tools it listed last are offered until it lists again", "mcp_server", s, "listed", lastListed[s], "err", err)
			default:
				c.Log.Warn("MCP server unavailable: its tools are not offered until it lists again", "mcp_server", s, "err", err)
			}
			continue
		}
		lastListed[s] = time.Now()
		for _, t := range listed {
			t.Name = uniqueName(s, t.Tool, taken)
			t.Approval = c.Policy.NeedsApproval(t)
			tools = append(tools, t)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.down {
		if _, still := down[s]; !still {
			c.Log.Info("MCP server available again", "mcp_server", s)
		}
	}
	c.tools, c.at, c.down, c.listed = tools, time.Now(), down, lastListed
	c.stale = c.at.Add(c.refresh())
	if len(down) > 0 {
		c.stale = c.at.Add(c.retryDown())
	}
	return tools
}

// Ready lists the tools at start and again, every pause, while a server
// cannot be listed, for at most within: a chat-service that starts while
// its sidecar is not yet done starting (a listing's workflow placed on a
// replica that is stopping, say) gets ready with the tools rather than
// without them. After within, whatever was listed is offered. It returns
// the tools.
func (c *Catalog) Ready(ctx context.Context, within, pause time.Duration) []Tool {
	deadline := time.Now().Add(within)
	tools := c.Tools(ctx)
	for c.Servers != nil && c.anyDown() && !time.Now().Add(pause).After(deadline) {
		select {
		case <-ctx.Done():
			return tools
		case <-time.After(pause):
		}
		listed := <-c.once.DoChan("list", func() (any, error) { return c.list(context.WithoutCancel(ctx)), nil })
		tools = append([]Tool{Builtin}, listed.Val.([]Tool)...)
	}
	return tools
}

// anyDown reports whether the last listing failed for a server.
func (c *Catalog) anyDown() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.down) > 0
}

func (c *Catalog) refresh() time.Duration {
	if c.Refresh <= 0 {
		return time.Minute
	}
	return c.Refresh
}

func (c *Catalog) keepDown() time.Duration {
	if c.KeepDown <= 0 {
		return 5 * time.Minute
	}
	return c.KeepDown
}

func (c *Catalog) retryDown() time.Duration {
	if c.RetryDown <= 0 {
		return min(5*time.Second, c.refresh())
	}
	return min(c.RetryDown, c.refresh())
}

// mcpTool is a tool as MCP's ListTools result describes it.
type mcpTool struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	InputSchema map[string]any `json:"inputSchema"`
	Annotations *struct {
		ReadOnlyHint bool `json:"readOnlyHint"`
	} `json:"annotations"`
}

// listServer runs server's ListTools workflow.
func (c *Catalog) listServer(ctx context.Context, server string) ([]Tool, error) {
	id, err := c.Workflows.ScheduleWorkflow(ctx, mcpListTools(server))
	if err != nil {
		return nil, err
	}
	defer c.Workflows.PurgeWorkflowState(context.WithoutCancel(ctx), id)
	meta, err := c.Workflows.WaitForWorkflowCompletion(ctx, id, workflow.WithFetchPayloads(true))
	if err != nil {
		return nil, err
	}
	if meta.RuntimeStatus != workflow.StatusCompleted || meta.Output == nil {
		return nil, fmt.Errorf("ListTools ended %s", meta.String())
	}
	var res struct {
		Tools []mcpTool `json:"tools"`
	}
	if err := json.Unmarshal([]byte(meta.Output.GetValue()), &res); err != nil {
		return nil, fmt.Errorf("ListTools answered something unreadable: %w", err)
	}
	out := make([]Tool, 0, len(res.Tools))
	for _, mt := range res.Tools {
		t, err := fromMCP(server, mt)
		if err != nil {
			c.Log.Warn("MCP tool left out", "mcp_server", server, "tool", mt.Name, "err", err)
			continue
		}
		out = append(out, t)
	}
	return out, nil
}

// fromMCP is the tool as the model gets it: its schema without the user
// argument, which chat-service fills in.
func fromMCP(server string, mt mcpTool) (Tool, error) {
	t := Tool{Server: server, Tool: mt.Name, Description: mt.Description, ReadOnly: mt.Annotations != nil && mt.Annotations.ReadOnlyHint}
	schema := mt.InputSchema
	if schema == nil {
		schema = map[string]any{"type": "object", "properties": map[string]any{}}
	}
	// The arguments chat-service sets are not the model's to see.
	for _, reserved := range []struct {
		name string
		flag *bool
	}{{contract.ToolUserArg, &t.ForUser}, {contract.ToolCallArg, &t.ForCall}} {
		props, ok := schema["properties"].(map[string]any)
		if !ok {
			break
		}
		if _, ok := props[reserved.name]; !ok {
			continue
		}
		*reserved.flag = true
		props = maps.Clone(props)
		delete(props, reserved.name)
		schema = maps.Clone(schema)
		schema["properties"] = props
		if req, ok := schema["required"].([]any); ok {
			schema["required"] = slices.DeleteFunc(slices.Clone(req), func(v any) bool { return v == reserved.name })
		}
	}
	raw, err := json.Marshal(schema)
	if err != nil {
		return Tool{}, err
	}
	t.Schema = raw
	var s jsonschema.Schema
	if err := json.Unmarshal(raw, &s); err != nil {
		return Tool{}, fmt.Errorf("input schema: %w", err)
	}
	if t.resolved, err = s.Resolve(nil); err != nil {
		return Tool{}, fmt.Errorf("input schema: %w", err)
	}
	return t, nil
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9_-]`)

// uniqueName is the model's name of server's tool: what the OpenAI-compatible
// API accepts (^[a-zA-Z0-9_-]{1,64}$), not taken yet.
func uniqueName(server, tool string, taken map[string]bool) string {
	base := unsafeName.ReplaceAllString(server+"_"+tool, "_")
	if len(base) > 60 {
		base = base[:60]
	}
	name := base
	for i := 2; taken[name]; i++ {
		name = fmt.Sprintf("%s_%d", base, i)
	}
	taken[name] = true
	return name
}

// Specs are the tools as the model is offered them.
func Specs(tools []Tool) []llm.ToolSpec {
	out := make([]llm.ToolSpec, len(tools))
	for i, t := range tools {
		out[i] = llm.ToolSpec{Name: t.Name, Description: t.Description, Parameters: t.Schema}
	}
	return out
}

// Prepare resolves a call the model made against the tools: where it runs,
// and what is sent — the model's arguments, checked against the tool's
// schema, with the turn's user for a tool that acts for one and the call's
// id (CallID) for a tool that takes it. A call that cannot be sent says why
// in Refused (named field, unknown tool).
func Prepare(tools []Tool, tc llm.ToolCall, userID, callID string) ToolCall {
	c := ToolCall{ID: tc.ID, Name: tc.Name, Arguments: tc.Arguments}
	i := slices.IndexFunc(tools, func(t Tool) bool { return t.Name == tc.Name })
	if i < 0 {
		c.Refused = fmt.Sprintf("unknown tool %q", tc.Name)
		return c
	}
	t := tools[i]
	c.Server, c.Tool, c.NeedsApproval = t.Server, t.Tool, t.Approval
	args := map[string]any{}
	if strings.TrimSpace(tc.Arguments) != "" {
		if err := json.Unmarshal([]byte(tc.Arguments), &args); err != nil {
			c.Refused = "the arguments are not a JSON object"
			return c
		}
	}
	delete(args, contract.ToolUserArg) // never the model's
	delete(args, contract.ToolCallArg)
	if t.resolved != nil {
		if err := t.resolved.Validate(args); err != nil {
			c.Refused = "the arguments do not match the tool's input schema: " + err.Error()
			return c
		}
	}
	if t.ForUser {
		args[contract.ToolUserArg] = userID
	}
	if t.ForCall {
		args[contract.ToolCallArg] = callID
	}
	c.Args = args
	return c
}
