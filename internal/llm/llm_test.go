package llm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/apperr"
)

var fixed = time.Date(2026, 11, 29, 3, 4, 5, 0, time.UTC)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func offline(t *testing.T) *Client {
	t.Helper()
	c, err := New(t.Context(), Config{Model: "m"}, StaticKey(""), quiet())
	if err != nil {
		t.Fatal(err)
	}
	c.SetClock(func() time.Time { return fixed })
	return c
}

func TestOfflineChat(t *testing.T) {
	c := offline(t)
	if c.Mode() != "offline" {
		t.Fatalf("mode = %s", c.Mode())
	}
	sys := ChatInstructions("Junaid", "formal", "Junaid likes Go.")
	history := []Message{{"user", "Hi, I am Junaid"}, {"assistant", "Hello Junaid"}}
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
				if stream {
					got, err = c.Stream(t.Context(), sys, tt.history, tt.user, func(s string) { pieces = append(pieces, s) })
				} else {
					got, err = c.Chat(t.Context(), sys, tt.history, tt.user)
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
			}
		})
	}
}

func TestOfflineSummary(t *testing.T) {
	c := offline(t)
	got, err := c.Complete(t.Context(), SummaryInstructions("Ana", "Ana is new."),
		[]Message{{"user", "I love hiking"}, {"assistant", "Nice"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "Ana") || !strings.Contains(got, "I love hiking") {
		t.Fatalf("summary = %q", got)
	}
}

func TestOfflineDelayHonoursContext(t *testing.T) {
	c, err := New(t.Context(), Config{OfflineDelay: time.Hour, Timeout: 50 * time.Millisecond}, StaticKey(""), quiet())
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Chat(t.Context(), "x", nil, "hi")
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

// fakeProvider speaks the Chat Completions wire format: it checks the key,
// can answer 429/503 first, and asks for get_current_time when asked for it.
func fakeProvider(t *testing.T, validKey string, failures []int, retryAfter string) (*httptest.Server, *atomic.Int32) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(calls.Add(1))
		if r.Header.Get("Authorization") != "Bearer "+validKey {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s","type":"invalid_request_error"}}`, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
			return
		}
		if n <= len(failures) {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			w.WriteHeader(failures[n-1])
			io.WriteString(w, `{"error":{"message":"busy","type":"server_error"}}`)
			return
		}
		var req struct {
			Messages []struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"messages"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		last := req.Messages[len(req.Messages)-1]
		w.Header().Set("Content-Type", "application/json")
		if last.Role == "tool" {
			fmt.Fprintf(w, `{"id":"x","object":"chat.completion","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"It is %s."}}]}`, last.Content)
			return
		}
		io.WriteString(w, `{"id":"x","object":"chat.completion","choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"get_current_time","arguments":"{}"}}]}}]}`)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func TestProviderRetriesAndKeyRotation(t *testing.T) {
	const key = "sk-live-0123456789abcdef"
	tests := []struct {
		name       string
		keys       []string
		failures   []int
		retryAfter string
		maxRetries int
		wantCode   apperr.Code
		wantCalls  int32
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
			srv, calls := fakeProvider(t, key, tt.failures, tt.retryAfter)
			keys := &rotatingKey{keys: tt.keys}
			c, err := New(t.Context(), Config{BaseURL: srv.URL + "/v1", Model: "m", MaxRetries: tt.maxRetries, Timeout: 10 * time.Second}, keys, quiet())
			if err != nil {
				t.Fatal(err)
			}
			if c.Mode() != "openai-compatible" {
				t.Fatalf("mode = %s", c.Mode())
			}
			c.SetClock(func() time.Time { return fixed })
			got, err := c.Chat(t.Context(), "sys", nil, "What time is it?")
			if apperr.CodeOf(err) != tt.wantCode {
				t.Fatalf("err = %v; want code %q", err, tt.wantCode)
			}
			if err == nil && got != "It is 2026-11-29 03:04:05 UTC." {
				t.Fatalf("reply = %q", got)
			}
			if calls.Load() != tt.wantCalls {
				t.Fatalf("provider calls = %d; want %d", calls.Load(), tt.wantCalls)
			}
			for _, k := range append(tt.keys, key) {
				if err != nil && (strings.Contains(err.Error(), k) || strings.Contains(apperr.MessageOf(err), k)) {
					t.Fatalf("error leaks a key: %v", err)
				}
			}
		})
	}
}

func TestRedact(t *testing.T) {
	for _, s := range []string{"Authorization: Bearer sk-abcdef123456", "url?key=AIzaSyABCDEF12345", `api_key: "sk-abcdef123456"`} {
		if got := Redact(s); strings.Contains(got, "abcdef123456") || strings.Contains(got, "ABCDEF12345") {
			t.Errorf("Redact(%q) = %q", s, got)
		}
	}
}
