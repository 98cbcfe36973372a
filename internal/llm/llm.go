// Package llm talks to any OpenAI-compatible Chat Completions endpoint
// (Gemini by default) with go-openai: one round of the model at a time
// (Round: its text streamed, the tools it asks for; the tool loop itself is
// the chat workflow's, durable per step), a per-call timeout, retries on 429
// and 5xx that honour Retry-After.
//
// The API key comes only from the Dapr secret store (see SecretKey). When
// the stored key is empty the client runs a built-in deterministic model
// (Offline) behind the same go-openai code path.
package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	openai "github.com/sashabaranov/go-openai"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/env"
)

// Defaults: Gemini through its OpenAI-compatible API.
const (
	DefaultBaseURL = "https://generativelanguage.googleapis.com/v1beta/openai/"
	DefaultModel   = "gemini-2.5-flash"
	// DefaultOfflineTokenDelay is the offline model's pause between streamed
	// words.
	DefaultOfflineTokenDelay = 20 * time.Millisecond
)

// Config configures the client.
type Config struct {
	BaseURL      string        // LLM_BASE_URL
	Model        string        // LLM_MODEL
	Timeout      time.Duration // per call (LLM_TIMEOUT, default 30s)
	MaxRetries   int           // on 429/5xx, LLM_MAX_RETRIES, default 3
	OfflineDelay time.Duration // offline model answers after this long (LLM_OFFLINE_DELAY)
	// OfflineTokenDelay is the offline model's pause between the words of a
	// streamed reply (LLM_OFFLINE_TOKEN_DELAY, default 20ms: a reply is seen
	// being written; 0: the whole reply in one piece).
	OfflineTokenDelay time.Duration
}

// ConfigFromEnv reads the LLM_* variables.
func ConfigFromEnv(r *env.Reader) Config {
	return Config{
		BaseURL:           r.String("LLM_BASE_URL", DefaultBaseURL),
		Model:             r.String("LLM_MODEL", DefaultModel),
		Timeout:           r.Duration("LLM_TIMEOUT", 30*time.Second),
		MaxRetries:        r.Int("LLM_MAX_RETRIES", 3, 0, 10),
		OfflineDelay:      r.Duration("LLM_OFFLINE_DELAY", 0),
		OfflineTokenDelay: r.Duration("LLM_OFFLINE_TOKEN_DELAY", DefaultOfflineTokenDelay),
	}
}

// Message is a turn of the conversation given as context.
type Message struct {
	Role    string // "user", "assistant" or RoleTool
	Content string
	// ToolCalls are the tools an assistant message called (Round).
	ToolCalls []ToolCall
	// ToolCallID and Name are the call a RoleTool message answers.
	ToolCallID, Name string
}

// RoleTool is the role of a tool's result in the conversation.
const RoleTool = "tool"

// Client generates replies.
type Client struct {
	cfg  Config
	oa   *openai.Client
	mode string
	log  *slog.Logger
	keys KeySource
}

// Mode reports "offline" (built-in model), "gemini" (the default endpoint)
// or "openai-compatible" (another LLM_BASE_URL). Never the key.
func (c *Client) Mode() string { return c.mode }

// New returns a client. keys supplies the API key; an empty key selects the
// offline model.
func New(ctx context.Context, cfg Config, keys KeySource, log *slog.Logger) (*Client, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	key, err := keys.Key(ctx)
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, log: log, keys: keys}
	oc := openai.DefaultConfig("")
	if key == "" {
		log.Warn("LLM: the secret gemini-api-key is empty; using the built-in offline model " +
			"(deterministic replies, no network). Put a real key in the secret store to use Gemini.")
		c.mode = "offline"
		oc.BaseURL = "http://offline.invalid/v1"
		oc.HTTPClient = &http.Client{Transport: &Offline{Delay: cfg.OfflineDelay, TokenDelay: cfg.OfflineTokenDelay}}
	} else {
		c.mode = "openai-compatible"
		if strings.TrimRight(cfg.BaseURL, "/") == strings.TrimRight(DefaultBaseURL, "/") {
			c.mode = "gemini"
		}
		oc.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
		oc.HTTPClient = &http.Client{Transport: &authRetry{
			base: http.DefaultTransport, keys: keys, maxRetries: cfg.MaxRetries, log: log,
		}}
		log.Info("LLM: using the OpenAI-compatible endpoint", "mode", c.mode, "base_url", RedactURL(oc.BaseURL), "model", cfg.Model)
	}
	c.oa = openai.NewClientWithConfig(oc)
	return c, nil
}

// TimeFormat is the format of the built-in get_current_time tool's answer.
const TimeFormat = "2006-01-02 15:04:05 UTC"

// Complete answers without tools (used for summaries): one round, and the
// tokens it took.
func (c *Client) Complete(ctx context.Context, system string, history []Message, user string) (string, Usage, error) {
	msgs := history
	if user != "" {
		msgs = append(slices.Clip(history), Message{Role: "user", Content: user})
	}
	a, err := c.Round(ctx, system, msgs, nil, nil)
	return a.Text, a.Usage, err
}

func (c *Client) once(ctx context.Context, req openai.ChatCompletionRequest) (openai.ChatCompletionMessage, Usage, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	start := time.Now()
	resp, err := c.oa.CreateChatCompletion(ctx, req)
	callDuration.WithLabelValues(c.mode, outcome(err)).Observe(time.Since(start).Seconds())
	if err != nil {
		return openai.ChatCompletionMessage{}, Usage{}, c.classify(ctx, err)
	}
	u := Usage{PromptTokens: resp.Usage.PromptTokens, CompletionTokens: resp.Usage.CompletionTokens}
	tokens.WithLabelValues(c.mode, "prompt").Add(float64(resp.Usage.PromptTokens))
	tokens.WithLabelValues(c.mode, "completion").Add(float64(resp.Usage.CompletionTokens))
	c.log.Debug("LLM call", "duration_ms", time.Since(start).Milliseconds(), "tokens", resp.Usage.TotalTokens)
	if len(resp.Choices) == 0 {
		return openai.ChatCompletionMessage{}, u, apperr.New(apperr.Unavailable, "the language model returned no choices")
	}
	return resp.Choices[0].Message, u, nil
}

// streamOnce reads one streamed completion. It copes with what Gemini's
// OpenAI-compatible endpoint does differently from OpenAI's: a tool call
// whose chunk says finish_reason "stop" (the tool calls decide, not the
// finish reason), tool calls without an index, and several calls that all
// say index 0 (a call with another id is a new call). A call without an id
// gets one, since the tool's answer must name it.
func (c *Client) streamOnce(ctx context.Context, req openai.ChatCompletionRequest, round int, onDelta func(string)) (openai.ChatCompletionMessage, Usage, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req.Stream = true
	// The usage in a last chunk (OpenAI's stream_options; providers that
	// do not know it report nothing, and the turn counts no tokens).
	req.StreamOptions = &openai.StreamOptions{IncludeUsage: true}
	start := time.Now()
	var usage Usage
	st, err := c.oa.CreateChatCompletionStream(ctx, req)
	defer func() { callDuration.WithLabelValues(c.mode, outcome(err)).Observe(time.Since(start).Seconds()) }()
	if err != nil {
		return openai.ChatCompletionMessage{}, usage, c.classify(ctx, err)
	}
	defer st.Close()
	msg := openai.ChatCompletionMessage{Role: openai.ChatMessageRoleAssistant}
	var content strings.Builder
	var calls []*openai.ToolCall
	current := map[int]*openai.ToolCall{} // index → the call being assembled there
	for {
		var chunk openai.ChatCompletionStreamResponse
		chunk, err = st.Recv()
		if errors.Is(err, io.EOF) {
			err = nil
			break
		}
		if err != nil {
			return msg, usage, c.classify(ctx, err)
		}
		if u := chunk.Usage; u != nil { // providers that report usage on a stream (OpenAI's last chunk)
			tokens.WithLabelValues(c.mode, "prompt").Add(float64(u.PromptTokens))
			tokens.WithLabelValues(c.mode, "completion").Add(float64(u.CompletionTokens))
			usage = Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens}
		}
		if len(chunk.Choices) == 0 {
			continue
		}
		d := chunk.Choices[0].Delta
		if d.Content != "" {
			content.WriteString(d.Content)
			onDelta(d.Content)
		}
		for _, tc := range d.ToolCalls {
			i := 0
			if tc.Index != nil {
				i = *tc.Index
			}
			cur, ok := current[i]
			if !ok || (tc.ID != "" && cur.ID != "" && tc.ID != cur.ID) || (tc.ID == "" && tc.Function.Name != "" && cur.Function.Name != "" && argsComplete(cur.Function.Arguments)) {
				cur = &openai.ToolCall{Type: openai.ToolTypeFunction}
				current[i] = cur
				calls = append(calls, cur)
			}
			if tc.ID != "" {
				cur.ID = tc.ID
			}
			cur.Function.Name += tc.Function.Name
			cur.Function.Arguments += tc.Function.Arguments
		}
	}
	msg.Content = content.String()
	for i, tc := range calls {
		if tc.ID == "" {
			tc.ID = fmt.Sprintf("call_%d_%d", round, i)
		}
		idx := i
		tc.Index = &idx
		msg.ToolCalls = append(msg.ToolCalls, *tc)
	}
	return msg, usage, nil
}

// argsComplete reports whether a tool call's arguments so far are a whole
// JSON value: a further chunk with a name then starts another call.
func argsComplete(args string) bool {
	return strings.TrimSpace(args) != "" && json.Valid([]byte(args))
}

// classify turns a go-openai error into an apperr without provider details
// (which may echo parts of the key) in the client-facing message.
func (c *Client) classify(ctx context.Context, err error) error {
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	status := 0
	switch {
	case errors.As(err, &apiErr):
		status = apiErr.HTTPStatusCode
	case errors.As(err, &reqErr):
		status = reqErr.HTTPStatusCode
	}
	safe := redacted{err: err}
	if k, kerr := c.keys.Key(context.WithoutCancel(ctx)); kerr == nil {
		safe.key = k
	}
	switch {
	case status == http.StatusTooManyRequests:
		return &apperr.Error{Code: apperr.RateLimited, Message: "the language model is rate limited; try again later", Err: safe, RetryAfter: 10 * time.Second}
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return apperr.Wrap(apperr.Unavailable, safe, "the language model refused the configured API key")
	case status >= 500:
		return apperr.Wrap(apperr.Unavailable, safe, "the language model is unavailable")
	case status >= 400:
		return apperr.Wrap(apperr.Internal, safe, "the language model rejected the request")
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		return apperr.Wrap(apperr.Timeout, safe, "the language model did not answer in time")
	default:
		return apperr.Wrap(apperr.Unavailable, safe, "the language model could not be reached")
	}
}

var (
	callDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name: "daca_llm_call_duration_seconds", Help: "LLM calls (each round of the tool loop), by mode and outcome.",
		Buckets: []float64{.01, .05, .1, .25, .5, 1, 2, 5, 10, 20, 30, 60},
	}, []string{"mode", "outcome"})
	tokens = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "daca_llm_tokens_total", Help: "Tokens the provider reported, by mode and kind (prompt, completion).",
	}, []string{"mode", "kind"})
)

func outcome(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// redacted hides the key, and anything that looks like a key or a bearer
// token, in an error text.
type redacted struct {
	err error
	key string
}

func (r redacted) Error() string {
	s := r.err.Error()
	if r.key != "" {
		s = strings.ReplaceAll(s, r.key, "[REDACTED]")
	}
	return Redact(s)
}
func (r redacted) Unwrap() error { return r.err }
