package turn

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dapr/durabletask-go/workflow"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/daca-go/daca/internal/dev/testkit"
)

// lister answers ListTools workflows from a table of servers: their tools'
// JSON, or down.
type lister struct {
	mu     sync.Mutex
	tools  map[string]string
	down   map[string]bool
	lists  int
	purged int
}

func (l *lister) ScheduleWorkflow(_ context.Context, name string, _ ...workflow.NewWorkflowOptions) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lists++
	server := strings.TrimSuffix(strings.TrimPrefix(name, "dapr.internal.mcp."), ".ListTools")
	if l.down[server] {
		return "", errors.New("workflow not registered")
	}
	return server, nil
}

func (l *lister) WaitForWorkflowCompletion(_ context.Context, id string, _ ...workflow.FetchWorkflowMetadataOptions) (*workflow.WorkflowMetadata, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return &workflow.WorkflowMetadata{RuntimeStatus: workflow.StatusCompleted, Output: wrapperspb.String(l.tools[id])}, nil
}

func (l *lister) PurgeWorkflowState(context.Context, string, ...workflow.PurgeOptions) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.purged++
	return nil
}

func (l *lister) set(server, tools string, down bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tools[server], l.down[server] = tools, down
}

func names(tools []Tool) string {
	var out []string
	for _, t := range tools {
		out = append(out, t.Name)
	}
	return strings.Join(out, ",")
}

// TestCatalog: every server's tools are offered beside the built-in one,
// named <server>_<tool>; a server that cannot be listed has none, and the
// turn goes on; a stale list is answered at once and listed again in the
// background, so a new tool shows on a later call.
func TestCatalog(t *testing.T) {
	t.Parallel()
	l := &lister{tools: map[string]string{}, down: map[string]bool{}}
	l.set("tools", `{"tools":[{"name":"convert","description":"c","inputSchema":{"type":"object"},"annotations":{"readOnlyHint":true}}]}`, false)
	l.set("weather", "", true)
	c := &Catalog{Workflows: l, Log: testkit.Quiet(), Refresh: time.Hour,
		Servers: func(context.Context) ([]string, error) { return []string{"weather", "tools"}, nil }}
	if got := names(c.Tools(t.Context())); got != "get_current_time,tools_convert" {
		t.Fatalf("tools %s", got)
	}
	if tools := c.Tools(t.Context()); !tools[1].ReadOnly || tools[1].Server != "tools" || tools[1].Tool != "convert" {
		t.Fatalf("tool %+v", tools[1])
	}
	if l.lists != 2 || l.purged != 1 {
		t.Fatalf("%d listings, %d purged; want 2 (one per server, once) and the listed one purged", l.lists, l.purged)
	}
	// Stale: the next call answers at once, the listing runs behind it.
	l.set("tools", `{"tools":[{"name":"convert"},{"name":"notes"}]}`, false)
	c.mu.Lock()
	c.stale = time.Now().Add(-time.Second)
	c.mu.Unlock()
	if got := names(c.Tools(t.Context())); got != "get_current_time,tools_convert" {
		t.Fatalf("a stale list answered %s; want the one it had", got)
	}
	testkit.WaitUntil(t, 5*time.Second, "the new tool listed", func() bool {
		return names(c.Tools(t.Context())) == "get_current_time,tools_convert,tools_notes"
	})
}

// TestCatalogListsADownServerSooner: a server that could not be listed is
// listed again RetryDown later, not a whole Refresh later; once it is back,
// its tools are offered and the list waits Refresh again.
func TestCatalogListsADownServerSooner(t *testing.T) {
	t.Parallel()
	l := &lister{tools: map[string]string{}, down: map[string]bool{}}
	l.set("tools", "", true)
	c := &Catalog{Workflows: l, Log: testkit.Quiet(), Refresh: time.Hour, RetryDown: 50 * time.Millisecond,
		Servers: func(context.Context) ([]string, error) { return []string{"tools"}, nil }}
	if got := names(c.Tools(t.Context())); got != "get_current_time" {
		t.Fatalf("tools %s with the server down", got)
	}
	l.set("tools", `{"tools":[{"name":"convert"}]}`, false)
	testkit.WaitUntil(t, 5*time.Second, "the server's tools once it is back", func() bool {
		return names(c.Tools(t.Context())) == "get_current_time,tools_convert"
	})
	c.mu.Lock()
	wait := time.Until(c.stale)
	c.mu.Unlock()
	if wait < 59*time.Minute {
		t.Fatalf("listed again in %s with every server up; want Refresh (1h)", wait)
	}
}

// TestCatalogKeepsWhatADownServerListedLast: a server listed before that
// cannot be listed now (its listing's workflow timed out on a replica that
// stops, say) keeps its tools for KeepDown after its last listing, then
// has none until it lists again.
func TestCatalogKeepsWhatADownServerListedLast(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		keepDown time.Duration
		want     string
	}{
		{"within KeepDown", time.Hour, "get_current_time,tools_convert"},
		{"after KeepDown", time.Nanosecond, "get_current_time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := &lister{tools: map[string]string{}, down: map[string]bool{}}
			l.set("tools", `{"tools":[{"name":"convert"}]}`, false)
			c := &Catalog{Workflows: l, Log: testkit.Quiet(), Refresh: time.Hour, KeepDown: tc.keepDown,
				Servers: func(context.Context) ([]string, error) { return []string{"tools"}, nil }}
			if got := names(c.Tools(t.Context())); got != "get_current_time,tools_convert" {
				t.Fatalf("tools %s", got)
			}
			l.set("tools", "", true)
			if got := names(append([]Tool{Builtin}, c.list(t.Context())...)); got != tc.want {
				t.Fatalf("with the server down: %q; want %s", got, tc.want)
			}
			if !c.anyDown() {
				t.Fatal("the server is not listed again sooner")
			}
		})
	}
}

// TestCatalogReady: at start, a server that cannot be listed is listed
// again until it answers (within the time given); one that never answers
// leaves the start with the other tools.
func TestCatalogReady(t *testing.T) {
	t.Parallel()
	l := &lister{tools: map[string]string{}, down: map[string]bool{}}
	l.set("tools", "", true)
	l.set("more", `{"tools":[{"name":"x"}]}`, false)
	listings := 0
	c := &Catalog{Workflows: l, Log: testkit.Quiet(), Refresh: time.Hour}
	c.Servers = func(context.Context) ([]string, error) {
		listings++
		if listings == 3 { // the third listing finds the server back
			l.set("tools", `{"tools":[{"name":"convert"}]}`, false)
		}
		return []string{"tools", "more"}, nil
	}
	if got := names(c.Ready(t.Context(), time.Minute, time.Millisecond)); got != "get_current_time,more_x,tools_convert" || listings != 3 {
		t.Fatalf("ready with %s after %d listings; want every tool after 3", got, listings)
	}
	never := &Catalog{Workflows: l, Log: testkit.Quiet(), Refresh: time.Hour,
		Servers: func(context.Context) ([]string, error) { return []string{"gone"}, nil }}
	l.set("gone", "", true)
	if got := names(never.Ready(t.Context(), 50*time.Millisecond, 10*time.Millisecond)); got != "get_current_time" {
		t.Fatalf("a server that never answers: %s", got)
	}
}

// TestUniqueName: names fit ^[a-zA-Z0-9_-]{1,64}$ and never repeat.
func TestUniqueName(t *testing.T) {
	t.Parallel()
	taken := map[string]bool{Builtin.Name: true}
	long := strings.Repeat("x", 80)
	tests := []struct{ server, tool, want string }{
		{"tools", "convert", "tools_convert"},
		{"my.server", "do it/now", "my_server_do_it_now"},
		{"tools", "convert", "tools_convert_2"},
		{"tools", "convert", "tools_convert_3"},
		{"s", long, "s_" + long[:58]},
		{"s", long, "s_" + long[:58] + "_2"},
	}
	for _, tt := range tests {
		got := uniqueName(tt.server, tt.tool, taken)
		if got != tt.want || len(got) > 64 || unsafeName.MatchString(got) {
			t.Errorf("uniqueName(%q, %q) = %q; want %q", tt.server, tt.tool, got, tt.want)
		}
	}
}
