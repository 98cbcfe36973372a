// Package llmtest is a local LLM provider for tests: an HTTP server that
// speaks the OpenAI Chat Completions wire format (what Gemini's
// OpenAI-compatible endpoint speaks), tool calls included.
package llmtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Message is one message of a request.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Request is what the provider reads of a chat completion request.
type Request struct {
	Model    string            `json:"model"`
	Messages []Message         `json:"messages"`
	Tools    []json.RawMessage `json:"tools"`
	Stream   bool              `json:"stream"`
}

// System is the request's system prompt ("" without one).
func (r Request) System() string {
	if len(r.Messages) > 0 && r.Messages[0].Role == "system" {
		return r.Messages[0].Content
	}
	return ""
}

// Last is the request's last message.
func (r Request) Last() Message {
	if len(r.Messages) == 0 {
		return Message{}
	}
	return r.Messages[len(r.Messages)-1]
}

// Reply is an answer: text, or a call of the tool ToolCall (no arguments),
// or several calls at once (ToolCalls).
type Reply struct {
	Content   string
	ToolCall  string
	ToolCalls []string
	// Hold, on a streamed answer, sends Content's words and then holds the
	// stream open, unfinished, until the caller goes away (a provider the
	// caller dies waiting for).
	Hold bool
}

func (r Reply) calls() []string {
	if r.ToolCall != "" {
		return append([]string{r.ToolCall}, r.ToolCalls...)
	}
	return r.ToolCalls
}

// Quirks are what Gemini's OpenAI-compatible streaming does differently
// from OpenAI's, reproduced when set.
type Quirks struct {
	// StopOnToolCall: finish_reason "stop" on a tool-call chunk instead of
	// "tool_calls".
	StopOnToolCall bool
	// NoToolIndex: tool_calls[].index missing.
	NoToolIndex bool
	// ToolIndexZero: several calls in one answer, each its own chunk, all
	// with index 0.
	ToolIndexZero bool
}

// Default answers as a model that uses get_current_time: the tool's
// result becomes "It is <result>."; a question about the time, with tools
// offered, calls get_current_time; anything else gets "provider says hello".
func Default(req Request) Reply {
	last := req.Last()
	switch {
	case last.Role == "tool":
		return Reply{Content: "It is " + last.Content + "."}
	case len(req.Tools) > 0 && strings.Contains(strings.ToLower(last.Content), "time"):
		return Reply{ToolCall: "get_current_time"}
	default:
		return Reply{Content: "provider says hello"}
	}
}

// Provider is the server's behaviour. Set its fields before serving.
type Provider struct {
	// Key is the only API key accepted (Authorization: Bearer). Any other is
	// refused with 401 and an error that names the key it got, as OpenAI's
	// does: the client must not pass that on.
	Key string
	// Failures are the statuses of the first calls (429, 503, ...), with
	// Retry-After when RetryAfter is set.
	Failures   []int
	RetryAfter string
	// Answer decides the reply; nil is Default. ok false sends nothing (for
	// an answer held until the caller goes away, return when ctx ends).
	Answer func(ctx context.Context, req Request) (r Reply, ok bool)
	// Streamed answers (requests with "stream": true) come as server-sent
	// events: FirstTokenDelay before the first chunk, then one chunk per
	// word TokenDelay apart.
	FirstTokenDelay, TokenDelay time.Duration
	Quirks                      Quirks

	calls    atomic.Int32
	mu       sync.Mutex
	arrivals []time.Time
	streams  []StreamTimes
}

// StreamTimes are the moments of one streamed answer.
type StreamTimes struct {
	Arrived, FirstToken, LastToken time.Time
}

// Streams are the streamed answers so far, in the order they ended.
func (p *Provider) Streams() []StreamTimes {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]StreamTimes(nil), p.streams...)
}

// Calls is how many requests arrived (refused ones included).
func (p *Provider) Calls() int { return int(p.calls.Load()) }

// Arrivals are the times the requests arrived, in order.
func (p *Provider) Arrivals() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.arrivals...)
}

// ServeHTTP serves POST …/chat/completions.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/chat/completions") {
		http.NotFound(w, r)
		return
	}
	n := int(p.calls.Add(1))
	p.mu.Lock()
	p.arrivals = append(p.arrivals, time.Now())
	p.mu.Unlock()
	if got := r.Header.Get("Authorization"); got != "Bearer "+p.Key {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s","type":"invalid_request_error"}}`, strings.TrimPrefix(got, "Bearer "))
		return
	}
	if n <= len(p.Failures) {
		if p.RetryAfter != "" {
			w.Header().Set("Retry-After", p.RetryAfter)
		}
		w.WriteHeader(p.Failures[n-1])
		io.WriteString(w, `{"error":{"message":"busy","type":"server_error"}}`)
		return
	}
	var req Request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":{"message":"want a JSON body with messages","type":"invalid_request_error"}}`)
		return
	}
	reply, ok := Default(req), true
	if p.Answer != nil {
		reply, ok = p.Answer(r.Context(), req)
	}
	if !ok {
		return
	}
	if req.Stream {
		p.stream(r.Context(), w, n, req, reply)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	model, _ := json.Marshal(req.Model)
	if len(reply.calls()) > 1 {
		var tcs []string
		for i, c := range reply.calls() {
			name, _ := json.Marshal(c)
			tcs = append(tcs, fmt.Sprintf(`{"id":"call_%d_%d","type":"function","function":{"name":%s,"arguments":"{}"}}`, n, i, name))
		}
		fmt.Fprintf(w, `{"id":"c","object":"chat.completion","model":%s,"choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":"","tool_calls":[%s]}}]}`, model, strings.Join(tcs, ","))
		return
	}
	if reply.ToolCall != "" {
		name, _ := json.Marshal(reply.ToolCall)
		fmt.Fprintf(w, `{"id":"c","object":"chat.completion","model":%s,"choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":"","tool_calls":[{"id":"call_%d","type":"function","function":{"name":%s,"arguments":"{}"}}]}}]}`, model, n, name)
		return
	}
	content, _ := json.Marshal(reply.Content)
	fmt.Fprintf(w, `{"id":"c","object":"chat.completion","model":%s,"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":%s}}],"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}`, model, content)
}

// stream writes the answer as Chat Completions chunks (server-sent events),
// with the configured delays and quirks.
func (p *Provider) stream(ctx context.Context, w http.ResponseWriter, n int, req Request, reply Reply) {
	w.Header().Set("Content-Type", "text/event-stream")
	flusher, _ := w.(http.Flusher)
	wait := func(d time.Duration) bool {
		if d <= 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	send := func(delta map[string]any, finish string) {
		choice := map[string]any{"index": 0, "delta": delta}
		if finish != "" {
			choice["finish_reason"] = finish
		}
		b, _ := json.Marshal(map[string]any{"id": "c", "object": "chat.completion.chunk", "model": req.Model, "choices": []any{choice}})
		fmt.Fprintf(w, "data: %s\n\n", b)
		if flusher != nil {
			flusher.Flush()
		}
	}
	times := StreamTimes{Arrived: time.Now()}
	defer func() {
		p.mu.Lock()
		p.streams = append(p.streams, times)
		p.mu.Unlock()
	}()
	if !wait(p.FirstTokenDelay) {
		return
	}
	times.FirstToken = time.Now()
	if calls := reply.calls(); len(calls) > 0 {
		finish := "tool_calls"
		if p.Quirks.StopOnToolCall {
			finish = "stop"
		}
		var tcs []map[string]any
		for i, c := range calls {
			tc := map[string]any{"id": fmt.Sprintf("call_%d_%d", n, i), "type": "function", "function": map[string]any{"name": c, "arguments": "{}"}}
			switch {
			case p.Quirks.NoToolIndex:
			case p.Quirks.ToolIndexZero:
				tc["index"] = 0
			default:
				tc["index"] = i
			}
			tcs = append(tcs, tc)
		}
		if p.Quirks.ToolIndexZero || p.Quirks.NoToolIndex { // Gemini: each call its own chunk, the last with the finish reason
			for i, tc := range tcs {
				f := ""
				if i == len(tcs)-1 {
					f = finish
				}
				send(map[string]any{"role": "assistant", "tool_calls": []any{tc}}, f)
			}
		} else {
			send(map[string]any{"role": "assistant", "tool_calls": tcs}, "")
			send(map[string]any{}, finish)
		}
	} else {
		words := strings.SplitAfter(reply.Content, " ")
		for i, wd := range words {
			if i > 0 && !wait(p.TokenDelay) {
				return
			}
			d := map[string]any{"content": wd}
			if i == 0 {
				d["role"] = "assistant"
			}
			send(d, "")
		}
		if reply.Hold {
			<-ctx.Done()
			return
		}
		send(map[string]any{}, "stop")
	}
	times.LastToken = time.Now()
	io.WriteString(w, "data: [DONE]\n\n")
}
