package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/testkit"
)

const testToken = "test-token-0123456789"

// state is an in-memory state store with ETags; conflicts, when set, is how
// many writes are refused (Aborted) as if another write came first.
type state struct {
	mu        sync.Mutex
	items     map[string]*dapr.StateItem
	version   int
	conflicts int
}

func (s *state) GetState(_ context.Context, _, key string, _ map[string]string) (*dapr.StateItem, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if it, ok := s.items[key]; ok {
		cp := *it
		return &cp, nil
	}
	return &dapr.StateItem{Key: key}, nil
}

func (s *state) SaveStateWithETag(_ context.Context, _, key string, data []byte, etag string, _ map[string]string, _ ...dapr.StateOption) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.items == nil {
		s.items = map[string]*dapr.StateItem{}
	}
	cur, ok := s.items[key]
	if s.conflicts > 0 || (ok && cur.Etag != etag) || (!ok && etag != "") {
		if s.conflicts > 0 {
			s.conflicts--
		}
		return status.Error(codes.Aborted, "possible etag mismatch")
	}
	s.version++
	s.items[key] = &dapr.StateItem{Key: key, Value: data, Etag: string(rune('a' + s.version))}
	return nil
}

type okSidecar struct{}

func (okSidecar) GetMetadata(context.Context) (*dapr.GetMetadataResponse, error) {
	return &dapr.GetMetadataResponse{}, nil
}

// bearer adds the tool token to every request.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.token != "" {
		r.Header.Set(contract.ToolTokenHeader, b.token)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// connect starts the tool server over st and returns an MCP client session
// that sends token.
func connect(t *testing.T, st *state, token string) (*mcp.ClientSession, error) {
	t.Helper()
	s := newServer(testkit.Quiet(), "")
	s.ready(testToken, &notes{state: st}, okSidecar{})
	srv := httptest.NewServer(s.routes())
	t.Cleanup(srv.Close)
	c := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "v1"}, nil)
	cs, err := c.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: srv.URL + contract.ToolPath,
		HTTPClient: &http.Client{Transport: bearer{token}}}, nil)
	if err == nil {
		t.Cleanup(func() { cs.Close() })
	}
	return cs, err
}

func call(t *testing.T, cs *mcp.ClientSession, tool string, args map[string]any) (string, bool) {
	t.Helper()
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String(), res.IsError
}

// TestToolsList: every tool is offered with its description, input schema
// and annotations: read-only ones say so, the ones that change something do
// not, and delete_note is destructive.
func TestToolsList(t *testing.T) {
	t.Parallel()
	cs, err := connect(t, &state{}, testToken)
	if err != nil {
		t.Fatal(err)
	}
	res, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	readOnly := map[string]bool{}
	for _, tool := range res.Tools {
		if tool.Description == "" || tool.InputSchema == nil || tool.Annotations == nil {
			t.Errorf("%s: description %q, schema %v, annotations %v", tool.Name, tool.Description, tool.InputSchema, tool.Annotations)
			continue
		}
		readOnly[tool.Name] = tool.Annotations.ReadOnlyHint
		if tool.Name == "delete_note" && (tool.Annotations.DestructiveHint == nil || !*tool.Annotations.DestructiveHint) {
			t.Error("delete_note is not marked destructive")
		}
	}
	want := map[string]bool{"convert_units": true, "calculate": true, "list_notes": true, "create_note": false, "delete_note": false}
	if len(readOnly) != len(want) {
		t.Fatalf("tools %v; want %v", readOnly, want)
	}
	for name, ro := range want {
		if got, ok := readOnly[name]; !ok || got != ro {
			t.Errorf("%s: readOnlyHint %v (offered %v); want %v", name, got, ok, ro)
		}
	}
}

// TestToolsRefuseWithoutTheToken: an MCP client without the bearer token,
// or with another, gets nowhere.
func TestToolsRefuseWithoutTheToken(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{"", "wrong-token-0123456789"} {
		if _, err := connect(t, &state{}, tok); err == nil {
			t.Errorf("token %q: connected", tok)
		}
	}
	if authorized("", "") || authorized("short", "short") {
		t.Error("an empty or short configured token lets callers in")
	}
}

func TestReadOnlyTools(t *testing.T) {
	t.Parallel()
	cs, err := connect(t, &state{}, testToken)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		tool    string
		args    map[string]any
		want    string
		isError bool
	}{
		{"convert_units", map[string]any{"value": 10, "from": "km", "to": "mi"}, "10 km = 6.213712 mi", false},
		{"convert_units", map[string]any{"value": 100, "from": "C", "to": "F"}, "100 C = 212 F", false},
		{"convert_units", map[string]any{"value": 1, "from": "lb", "to": "g"}, "1 lb = 453.59237 g", false},
		{"convert_units", map[string]any{"value": 1, "from": "kg", "to": "km"}, "cannot convert", true},
		{"convert_units", map[string]any{"value": 1, "from": "parsec", "to": "km"}, `unknown unit "parsec"`, true},
		{"calculate", map[string]any{"expression": "(2+3)*4 - 2^3"}, "= 12", false},
		{"calculate", map[string]any{"expression": "-2^2 + 10/4"}, "= -1.5", false},
		{"calculate", map[string]any{"expression": "1/0"}, "not a finite number", true},
		{"calculate", map[string]any{"expression": "2 +"}, "ends too early", true},
		{"calculate", map[string]any{"expression": "(1"}, "missing )", true},
	}
	for _, tt := range tests {
		got, isErr := call(t, cs, tt.tool, tt.args)
		if isErr != tt.isError || !strings.Contains(got, tt.want) {
			t.Errorf("%s %v = %q (isError %v); want %q (isError %v)", tt.tool, tt.args, got, isErr, tt.want, tt.isError)
		}
	}
	// Arguments that do not match the schema are refused by the SDK before
	// the tool runs.
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "convert_units", Arguments: map[string]any{"value": "ten", "from": "km", "to": "mi"}})
	if err == nil && !res.IsError {
		t.Errorf("a string value was accepted: %+v", res)
	}
}

// TestNotes: notes are kept per user (the user chat-service passes), listed
// and deleted; writes that lose a race are tried again; nothing is done
// without a user.
func TestNotes(t *testing.T) {
	t.Parallel()
	st := &state{}
	cs, err := connect(t, st, testToken)
	if err != nil {
		t.Fatal(err)
	}
	u := contract.ToolUserArg
	got, isErr := call(t, cs, "create_note", map[string]any{u: "ana", "text": "buy milk"})
	if isErr || !strings.Contains(got, "buy milk") {
		t.Fatalf("create_note = %q, %v", got, isErr)
	}
	id := strings.TrimSuffix(strings.Fields(got)[2], "):")
	st.mu.Lock()
	st.conflicts = 2 // two writes lose a race: the third goes through
	st.mu.Unlock()
	if got, isErr = call(t, cs, "create_note", map[string]any{u: "ana", "text": "call mum"}); isErr {
		t.Fatalf("create_note after conflicts = %q", got)
	}
	call(t, cs, "create_note", map[string]any{u: "bo", "text": "bo's secret"})
	if got, _ = call(t, cs, "list_notes", map[string]any{u: "ana"}); !strings.Contains(got, "buy milk") || !strings.Contains(got, "call mum") || strings.Contains(got, "bo's") {
		t.Fatalf("ana's notes: %q", got)
	}
	if got, isErr = call(t, cs, "delete_note", map[string]any{u: "bo", "id": id}); !isErr {
		t.Fatalf("bo deleted ana's note: %q", got)
	}
	if got, isErr = call(t, cs, "delete_note", map[string]any{u: "ana", "id": id}); isErr {
		t.Fatalf("delete_note = %q", got)
	}
	if got, _ = call(t, cs, "list_notes", map[string]any{u: "ana"}); strings.Contains(got, "buy milk") || !strings.Contains(got, "call mum") {
		t.Fatalf("after delete: %q", got)
	}
	// A repeated attempt of one call (the same _call_id) keeps the note once.
	for range 2 {
		if got, isErr = call(t, cs, "create_note", map[string]any{u: "cy", contract.ToolCallArg: "chat-1-r1-t1", "text": "once"}); isErr {
			t.Fatalf("create_note with a call id = %q", got)
		}
	}
	if got, _ = call(t, cs, "list_notes", map[string]any{u: "cy"}); strings.Count(got, "once") != 1 {
		t.Fatalf("a repeated call kept %q", got)
	}
	if got, isErr = call(t, cs, "create_note", map[string]any{u: "", "text": "x"}); !isErr || !strings.Contains(got, "acts for a user") {
		t.Fatalf("without a user: %q, %v", got, isErr)
	}
}
