package llm

import (
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/dev/testkit"
	"github.com/daca-go/daca/internal/llm/llmtest"
)

var fixed = time.Date(2026, 11, 29, 3, 4, 5, 0, time.UTC)

func offline(t *testing.T) *Client {
	t.Helper()
	c, err := New(t.Context(), Config{Model: "m", OfflineTokenDelay: time.Microsecond}, StaticKey(""), testkit.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// converse runs what the chat workflow runs, in the test: rounds of the
// model with get_current_time offered, answering its calls with the fixed
// time, until it replies (at most 4 rounds). It returns the reply (the text
// of every round), the calls made and the provider-facing text pieces.
func converse(ctx context.Context, c *Client, system string, history []Message, user string, on func(string)) (string, []ToolCall, error) {
	msgs := append(slices.Clip(history), Message{Role: "user", Content: user})
	var reply strings.Builder
	var calls []ToolCall
	for range 4 {
		a, err := c.Round(ctx, system, msgs, []ToolSpec{TimeTool}, on)
		if err != nil {
			return "", calls, err
		}
		reply.WriteString(a.Text)
		if len(a.ToolCalls) == 0 {
			return reply.String(), calls, nil
		}
		msgs = append(msgs, Message{Role: "assistant", Content: a.Text, ToolCalls: a.ToolCalls})
		for _, tc := range a.ToolCalls {
			calls = append(calls, tc)
			msgs = append(msgs, Message{Role: RoleTool, Content: fixed.Format(TimeFormat), ToolCallID: tc.ID, Name: tc.Name})
		}
	}
	return "", calls, fmt.Errorf("the model kept calling tools")
}

func TestOfflineChat(t *testing.T) {
	t.Parallel()
	c := offline(t)
	if c.Mode() != "offline" {
		t.Fatalf("mode = %s", c.Mode())
	}
	sys := ChatInstructions("Junaid", "formal", "Junaid likes Go.")
	history := []Message{{Role: "user", Content: "Hi, I am Junaid"}, {Role: "assistant", Content: "Hello Junaid"}}
	tests := []struct {
		name, user string
		history    []Message
		want       []string
	}{
		{"time uses the tool", "What time is it?", nil, []string{"2026-11-29 03:04:05 UTC", "Junaid"}},
		{"instructions reach the prompt", "Tell me a joke", nil, []string{"Junaid", "formal", "Junaid likes Go."}},
		{"history reaches the prompt", "And now?", history, []string{"2 earlier message(s)", "Hello Junaid"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, stream := range []bool{false, true} {
				var got string
				var err error
				var pieces []string
				var tools []ToolCall
				if stream {
					got, tools, err = converse(t.Context(), c, sys, tt.history, tt.user, func(d string) { pieces = append(pieces, d) })
				} else {
					got, tools, err = converse(t.Context(), c, sys, tt.history, tt.user, nil)
				}
				if err != nil {
					t.Fatalf("stream=%v: %v", stream, err)
				}
				for _, w := range tt.want {
					if !strings.Contains(got, w) {
						t.Errorf("stream=%v: reply %q lacks %q", stream, got, w)
					}
				}
				if stream && (len(pieces) < 2 || strings.Join(pieces, "") != got) {
					t.Errorf("stream pieces %q do not make up the reply %q", pieces, got)
				}
				if wantTool := strings.Contains(tt.name, "tool"); wantTool != (len(tools) == 1) {
					t.Errorf("tool calls: %+v", tools)
				} else if wantTool && (tools[0].Name != "get_current_time" || tools[0].Arguments != "{}" || tools[0].ID == "") {
					t.Errorf("tool call %+v", tools[0])
				}
			}
		})
	}
}

// TestOfflineStreamWithoutDelay: with no pause between words, the reply
// comes in one piece.
func TestOfflineStreamWithoutDelay(t *testing.T) {
	t.Parallel()
	c, err := New(t.Context(), Config{Model: "m"}, StaticKey(""), testkit.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	var pieces []string
	got, _, err := converse(t.Context(), c, "be brief", nil, "Tell me a joke", func(d string) { pieces = append(pieces, d) })
	if err != nil || len(pieces) != 1 || pieces[0] != got || !strings.Contains(got, "joke") {
		t.Fatalf("reply %q, pieces %q, err %v; want the reply in one piece", got, pieces, err)
	}
}

func TestOfflineSummary(t *testing.T) {
	t.Parallel()
	c := offline(t)
	got, use, err := c.Complete(t.Context(), SummaryInstructions("Ana", "Ana is new."),
		[]Message{{Role: "user", Content: "I love hiking"}, {Role: "assistant", Content: "Nice"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if use.PromptTokens == 0 || use.CompletionTokens == 0 {
		t.Fatalf("usage %+v; want the offline model's counts", use)
	}
	if !strings.Contains(got, "Ana") || !strings.Contains(got, "I love hiking") {
		t.Fatalf("summary = %q", got)
	}
}

func TestOfflineDelayHonoursContext(t *testing.T) {
	t.Parallel()
	c, err := New(t.Context(), Config{OfflineDelay: time.Hour, Timeout: 50 * time.Millisecond}, StaticKey(""), testkit.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = converse(t.Context(), c, "x", nil, "hi", nil)
	if apperr.CodeOf(err) != apperr.Timeout {
		t.Fatalf("err = %v; want a timeout", err)
	}
}

// rotatingKey is a key source whose key changes on Refresh.
type rotatingKey struct {
	mu        sync.Mutex
	keys      []string
	refreshes int
}

func (r *rotatingKey) Key(context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.keys[0], nil
}

func (r *rotatingKey) Refresh(context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refreshes++
	if len(r.keys) > 1 {
		r.keys = r.keys[1:]
	}
	return r.keys[0], nil
}

func TestProviderRetriesAndKeyRotation(t *testing.T) {
	t.Parallel()
	const key = "sk-live-0123456789abcdef"
	tests := []struct {
		name       string
		keys       []string
		failures   []int
		retryAfter string
		maxRetries int
		wantCode   apperr.Code
		wantCalls  int
	}{
		{"tool loop", []string{key}, nil, "", 3, "", 2},
		{"429 then ok, Retry-After honoured", []string{key}, []int{429}, "0", 3, "", 3},
		{"503 twice then ok", []string{key}, []int{503, 503}, "", 3, "", 4},
		{"429 beyond retries", []string{key}, []int{429, 429, 429}, "0", 1, apperr.RateLimited, 2},
		{"rotated key picked up after 401", []string{"sk-old-key-000000", key}, nil, "", 3, "", 3},
		{"wrong key", []string{"sk-wrong-key-111111"}, nil, "", 3, apperr.Unavailable, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prov := &llmtest.Provider{Key: key, Failures: tt.failures, RetryAfter: tt.retryAfter}
			srv := httptest.NewServer(prov)
			t.Cleanup(srv.Close)
			keys := &rotatingKey{keys: tt.keys}
			c, err := New(t.Context(), Config{BaseURL: srv.URL + "/v1", Model: "m", MaxRetries: tt.maxRetries, Timeout: 10 * time.Second}, keys, testkit.Quiet())
			if err != nil {
				t.Fatal(err)
			}
			if c.Mode() != "openai-compatible" {
				t.Fatalf("mode = %s", c.Mode())
			}
			got, _, err := converse(t.Context(), c, "sys", nil, "What time is it?", nil)
			if apperr.CodeOf(err) != tt.wantCode {
				t.Fatalf("err = %v; want code %q", err, tt.wantCode)
			}
			if err == nil && got != "It is 2026-11-29 03:04:05 UTC." {
				t.Fatalf("reply = %q", got)
			}
			if prov.Calls() != tt.wantCalls {
				t.Fatalf("provider calls = %d; want %d", prov.Calls(), tt.wantCalls)
			}
			for _, k := range append(tt.keys, key) {
				if err != nil && (strings.Contains(err.Error(), k) || strings.Contains(apperr.MessageOf(err), k)) {
					t.Fatalf("error leaks a key: %v", err)
				}
			}
		})
	}
}

// TestProviderFaults: a 429 with Retry-After: 2 is retried no sooner than
// 2 s later; a provider that hangs ends at LLM_TIMEOUT with a Timeout (the
// workflow's retry policy then runs generate_response again), after one
// call.
func TestProviderFaults(t *testing.T) {
	t.Parallel()
	const key = "sk-live-0123456789abcdef"
	t.Run("429 with Retry-After: 2", func(t *testing.T) {
		prov := &llmtest.Provider{Key: key, Failures: []int{429}, RetryAfter: "2"}
		srv := httptest.NewServer(prov)
		defer srv.Close()
		c, err := New(t.Context(), Config{BaseURL: srv.URL + "/v1", Model: "m", MaxRetries: 3, Timeout: 10 * time.Second}, &rotatingKey{keys: []string{key}}, testkit.Quiet())
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := converse(t.Context(), c, "sys", nil, "hello", nil); err != nil {
			t.Fatal(err)
		}
		at := prov.Arrivals()
		if len(at) != 2 || at[1].Sub(at[0]) < 2*time.Second {
			t.Fatalf("%d calls, %v apart; want 2, at least 2s apart", len(at), at[len(at)-1].Sub(at[0]))
		}
	})
	t.Run("a hung provider", func(t *testing.T) {
		prov := &llmtest.Provider{Key: key, Answer: func(ctx context.Context, _ llmtest.Request) (llmtest.Reply, bool) {
			<-ctx.Done() // never answers
			return llmtest.Reply{}, false
		}}
		srv := httptest.NewServer(prov)
		defer srv.Close()
		c, err := New(t.Context(), Config{BaseURL: srv.URL + "/v1", Model: "m", MaxRetries: 3, Timeout: 300 * time.Millisecond}, &rotatingKey{keys: []string{key}}, testkit.Quiet())
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, _, err = converse(t.Context(), c, "sys", nil, "hello", nil)
		if apperr.CodeOf(err) != apperr.Timeout || time.Since(start) > 5*time.Second || prov.Calls() != 1 {
			t.Fatalf("err %v after %s and %d calls; want Timeout at LLM_TIMEOUT after 1 call", err, time.Since(start), prov.Calls())
		}
	})
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"https://generativelanguage.googleapis.com/v1beta/openai/", "https://generativelanguage.googleapis.com/v1beta/openai/"},
		{"https://llm.example/v1?key=AIzaSyABCDEF12345&x=1", "https://llm.example/v1?key=REDACTED&x=REDACTED"},
		{"https://user:sk-secret-pass@llm.example/v1", "https://user:REDACTED@llm.example/v1"},
		{"http://[::1:bad", "[REDACTED URL]"},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
	if got := Redact("calling https://llm.example/v1?key=AIzaSyABCDEF12345 failed"); strings.Contains(got, "ABCDEF12345") {
		t.Errorf("Redact leaves a key in a URL: %q", got)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"Authorization: Bearer sk-abcdef123456", "url?key=AIzaSyABCDEF12345", `api_key: "sk-abcdef123456"`} {
		if got := Redact(s); strings.Contains(got, "abcdef123456") || strings.Contains(got, "ABCDEF12345") {
			t.Errorf("Redact(%q) = %q", s, got)
		}
	}
}

// TestStreamingQuirks: rounds over a streamed provider, as OpenAI streams
// and with each of Gemini's quirks (finish_reason "stop" on a tool call, no
// index, several calls all at index 0): every tool call comes back once,
// with an id, the text streams in pieces, and the reply is the pieces
// joined.
func TestStreamingQuirks(t *testing.T) {
	t.Parallel()
	const key = "sk-live-0123456789abcdef"
	twoCalls := func(_ context.Context, req llmtest.Request) (llmtest.Reply, bool) {
		if req.Last().Role == "tool" {
			tools := 0
			for _, m := range req.Messages {
				if m.Role == "tool" {
					tools++
				}
			}
			return llmtest.Reply{Content: fmt.Sprintf("I called %d tools and it is %s.", tools, req.Last().Content)}, true
		}
		return llmtest.Reply{ToolCalls: []string{"get_current_time", "get_current_time"}}, true
	}
	tests := []struct {
		name      string
		quirks    llmtest.Quirks
		answer    func(context.Context, llmtest.Request) (llmtest.Reply, bool)
		wantReply string
		wantTools int
	}{
		{"openai", llmtest.Quirks{}, nil, "It is 2026-11-29 03:04:05 UTC.", 1},
		{"finish_reason stop on the tool call", llmtest.Quirks{StopOnToolCall: true}, nil, "It is 2026-11-29 03:04:05 UTC.", 1},
		{"no index", llmtest.Quirks{NoToolIndex: true, StopOnToolCall: true}, nil, "It is 2026-11-29 03:04:05 UTC.", 1},
		{"two calls, as OpenAI", llmtest.Quirks{}, twoCalls, "I called 2 tools and it is 2026-11-29 03:04:05 UTC.", 2},
		{"two calls, both index 0", llmtest.Quirks{ToolIndexZero: true, StopOnToolCall: true}, twoCalls, "I called 2 tools and it is 2026-11-29 03:04:05 UTC.", 2},
		{"two calls, no index", llmtest.Quirks{NoToolIndex: true}, twoCalls, "I called 2 tools and it is 2026-11-29 03:04:05 UTC.", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prov := &llmtest.Provider{Key: key, Quirks: tt.quirks, Answer: tt.answer}
			srv := httptest.NewServer(prov)
			t.Cleanup(srv.Close)
			c, err := New(t.Context(), Config{BaseURL: srv.URL + "/v1", Model: "m", Timeout: 10 * time.Second}, StaticKey(key), testkit.Quiet())
			if err != nil {
				t.Fatal(err)
			}
			var deltas []string
			got, tools, err := converse(t.Context(), c, "sys", nil, "What time is it?", func(d string) { deltas = append(deltas, d) })
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.wantReply || strings.Join(deltas, "") != got || len(deltas) < 3 {
				t.Fatalf("reply %q from %d pieces %q; want %q", got, len(deltas), deltas, tt.wantReply)
			}
			if len(tools) != tt.wantTools || prov.Calls() != 2 {
				t.Fatalf("tools %+v, provider calls %d; want %d tools, 2 calls", tools, prov.Calls(), tt.wantTools)
			}
			ids := map[string]bool{}
			for _, u := range tools {
				if u.Name != "get_current_time" || u.Arguments != "{}" || u.ID == "" || ids[u.ID] {
					t.Fatalf("tool call %+v (ids so far %v); want get_current_time with an id of its own", u, ids)
				}
				ids[u.ID] = true
			}
		})
	}
}

// TestOfflineCallsTools: the offline model calls the tools the user's text
// asks for, one per round in the order asked, only when offered (an MCP
// tool under its server's prefix too), then replies with every result.
func TestOfflineCallsTools(t *testing.T) {
	t.Parallel()
	c := offline(t)
	offered := []ToolSpec{TimeTool,
		{Name: "tools_convert_units", Parameters: []byte(`{"type":"object"}`)},
		{Name: "tools_calculate", Parameters: []byte(`{"type":"object"}`)},
		{Name: "tools_create_note", Parameters: []byte(`{"type":"object"}`)},
		{Name: "tools_list_notes", Parameters: []byte(`{"type":"object"}`)}}
	tests := []struct {
		text  string
		tools []ToolSpec
		want  []string // name and arguments of each call, in order
	}{
		{"convert 5 km to mi and remind me to buy milk", offered,
			[]string{`tools_convert_units {"from":"km","to":"mi","value":5}`, `tools_create_note {"text":"buy milk"}`}},
		{"what is (2+3)*4?", offered, []string{`tools_calculate {"expression":"(2+3)*4"}`}},
		{"list my notes", offered, []string{`tools_list_notes {}`}},
		{"what time is it", offered, []string{`get_current_time {}`}},
		{"convert 5 km to mi", []ToolSpec{TimeTool}, nil}, // not offered: a plain reply
		{"tell me a joke", offered, nil},
		{`use tools_convert_units with {"value":"five"}`, offered, []string{`tools_convert_units {"value":"five"}`}},
		{`use convert_units with {"value":1}`, offered, nil}, // by its full name only
		{`use tools_list_notes with {} and use get_current_time with {"zone":"UTC"}`, offered,
			[]string{`tools_list_notes {}`, `get_current_time {"zone":"UTC"}`}},
	}
	for _, tt := range tests {
		msgs := []Message{{Role: "user", Content: tt.text}}
		var got []string
		for range 5 {
			a, err := c.Round(t.Context(), "sys", msgs, tt.tools, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(a.ToolCalls) == 0 {
				if len(tt.want) > 0 && !strings.Contains(a.Text, "answered: result") && !strings.Contains(a.Text, "time is result") {
					t.Errorf("%q: reply %q lacks the results", tt.text, a.Text)
				}
				break
			}
			tc := a.ToolCalls[0]
			got = append(got, tc.Name+" "+tc.Arguments)
			msgs = append(msgs, Message{Role: "assistant", ToolCalls: a.ToolCalls},
				Message{Role: RoleTool, Content: "result", ToolCallID: tc.ID, Name: tc.Name})
		}
		if strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("%q: calls %q; want %q", tt.text, got, tt.want)
		}
	}
}
