package services

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// TestToolsChangeWhileRunning: an MCP server added to chat-service's
// resources while the stack runs is offered without a restart (its sidecar
// hot-reloads MCPServers; chat-service lists the tools again after
// TOOLS_REFRESH); a tool that outlives TOOL_TIMEOUT (2 s here; the
// server's own timeout is 30 s) is stopped, the model gets an error result
// that says so, and the turn goes on; a tool the server starts offering
// is offered once its resource changes; arguments that do not match a
// tool's schema are never sent, and the model hears which field is wrong.
func TestToolsChangeWhileRunning(t *testing.T) {
	st := stacktest.Stack(t)
	var echoes atomic.Int32
	srv := mcp.NewServer(&mcp.Implementation{Name: "extra", Version: "v1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "slow", Description: "Answers after five seconds."},
		func(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			select {
			case <-time.After(5 * time.Second):
			case <-ctx.Done():
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "slow done"}}}, nil, nil
		})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	// The resource of the new server, with Dapr's own deadline per call
	// longer than chat-service's TOOL_TIMEOUT.
	res := filepath.Join(st.ResourcesDir(), "mcpserver-extra.yaml")
	write := func(version string) {
		t.Helper()
		yaml := fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: MCPServer
metadata:
  name: extra
scopes:
  - chat-service
spec:
  catalog:
    description: a test server, version %s
  endpoint:
    streamableHTTP:
      url: http://%s/
      timeout: 30s
`, version, ln.Addr())
		if err := os.WriteFile(res, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("1")
	t.Cleanup(func() { os.Remove(res) })
	waitOffered(t, st, "extra_slow")

	start := time.Now()
	if reply := askTool(t, st, `use extra_slow with {}`); !strings.Contains(reply, "extra_slow answered: error: the tool did not answer within 2s") {
		t.Fatalf("a tool past TOOL_TIMEOUT: reply %q; want an error result that says so", reply)
	}
	if d := time.Since(start); d > 4500*time.Millisecond {
		t.Errorf("the turn took %s: TOOL_TIMEOUT (2 s) was not applied", d)
	}

	// The server starts offering a tool; its operator changes the resource.
	type echoArgs struct {
		Text string `json:"text" jsonschema:"what to say back"`
	}
	mcp.AddTool(srv, &mcp.Tool{Name: "echo", Description: "Says the text back."},
		func(_ context.Context, _ *mcp.CallToolRequest, in echoArgs) (*mcp.CallToolResult, any, error) {
			echoes.Add(1)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "echo: " + in.Text}}}, nil, nil
		})
	write("2")
	waitOffered(t, st, "extra_echo")
	if reply := askTool(t, st, `use extra_echo with {"text":"hello"}`); !strings.Contains(reply, "extra_echo answered: echo: hello") {
		t.Fatalf("the new tool: reply %q", reply)
	}
	if reply := askTool(t, st, `use extra_echo with {"text":5}`); !strings.Contains(reply, "extra_echo answered: error") || !strings.Contains(reply, "text") {
		t.Fatalf("bad arguments: reply %q; want an error result naming the field", reply)
	}
	if n := echoes.Load(); n != 1 {
		t.Errorf("the echo tool ran %d times; want 1 (bad arguments are not sent)", n)
	}
}

// askTool sends text as a new user's turn and answers the reply.
func askTool(t *testing.T, st *stack.Stack, text string) string {
	t.Helper()
	r := stacktest.Do(t, http.MethodPost, chatURL(st, "chat"), map[string]any{"user_id": unique("tools"), "text": text}, token(st)...)
	if r.Status != http.StatusOK {
		t.Fatalf("chat: %d %s", r.Status, r.Body)
	}
	reply, _ := r.JSON["reply"].(string)
	return reply
}

// waitOffered waits until chat-service offers the tool name.
func waitOffered(t *testing.T, st *stack.Stack, name string) {
	t.Helper()
	testkit.WaitFor(t, 90*time.Second, name+" offered", func() error {
		r := stacktest.Do(t, http.MethodGet, chatURL(st, "tools"), nil, token(st)...)
		var names []string
		tools, _ := r.JSON["tools"].([]any)
		for _, x := range tools {
			m, _ := x.(map[string]any)
			n, _ := m["name"].(string)
			names = append(names, n)
		}
		if !slices.Contains(names, name) {
			return fmt.Errorf("offered %v", names)
		}
		return nil
	})
}
