// Package backend is how the gateway reaches chat-service and
// agent-memory-service: Dapr service invocation through its own sidecar, a
// timeout per call, and the apps' errors turned into apperr codes with
// their own detail. Two paths reach the sidecar (Invocation): its HTTP API
// (HTTP, the default) and its gRPC API with the go-sdk (GRPC, Dapr's
// deprecated gRPC-to-HTTP path); see README, "Service invocation".
package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/google/uuid"
	"golang.org/x/sync/singleflight"
)

// Backend is what the resolvers call.
type Backend interface {
	Memory(ctx context.Context, userID string) (contract.Profile, error)
	InitializeMemory(ctx context.Context, userID string, p contract.Profile) (contract.Profile, error)
	Conversation(ctx context.Context, sessionID string) ([]contract.Entry, error)
	// Conversations reads several histories in one call (at most
	// contract.MaxBatch ids), the last `last` entries of each when last > 0.
	Conversations(ctx context.Context, sessionIDs []string, last int) (map[string][]contract.Entry, error)
	Sessions(ctx context.Context, userID string) ([]contract.SessionInfo, error)
	// SessionOwner is the user a session belongs to; "" for a session
	// nobody has started. One lookup.
	SessionOwner(ctx context.Context, sessionID string) (string, error)
	ForgetUser(ctx context.Context, userID string) (int, error)
	DeleteConversation(ctx context.Context, sessionID string) (bool, error)
	SendMessage(ctx context.Context, in ChatInput) (Reply, error)
	StartChat(ctx context.Context, in ChatInput) (Run, error)
	ChatRun(ctx context.Context, instanceID string) (*Run, error)
	// CancelChat stops a turn (Dapr's terminate) and returns its state; nil
	// for an unknown turn.
	CancelChat(ctx context.Context, instanceID string) (*Run, error)
	Health(ctx context.Context) Health
}

// ChatInput is a message to the agent.
type ChatInput struct {
	UserID         string
	Text           string
	SessionID      string
	Tags           []string
	IdempotencyKey string
}

// Reply is a finished chat turn.
type Reply struct {
	UserID     string
	SessionID  string
	Reply      string
	InstanceID string
	Status     contract.RunStatus
	Timestamp  time.Time
}

// Run is a chat turn as chat-service describes it.
type Run = contract.ChatRun

// Health of the backends.
type Health struct {
	Sidecar string            // ok | unavailable
	Apps    map[string]string // app id → ok | degraded | unavailable
	LLM     string            // as chat-service reports it
}

// Client is the Backend over Dapr service invocation through the gateway's
// sidecar.
type Client struct {
	Sidecar     Invocation
	Timeout     time.Duration // per call (default 10s)
	ChatTimeout time.Duration // sendMessage (default 75s)

	// runs joins concurrent reads of one turn into one call: a thousand
	// clients subscribing to the same turn at once ask chat-service (and
	// its workflow engine) once.
	runs singleflight.Group
}

func (c *Client) call(ctx context.Context, timeout time.Duration, app, method, verb string, in, out any) error {
	return c.callWithKey(ctx, timeout, app, method, verb, "", in, out)
}

// callWithKey invokes method of app; key, when set, travels as the
// Idempotency-Key header.
func (c *Client) callWithKey(ctx context.Context, timeout time.Duration, app, method, verb, key string, in, out any) error {
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return apperr.Wrap(apperr.Internal, err, "encoding failed")
		}
		body = b
	}
	answer, err := c.Sidecar.Invoke(ctx, Request{App: app, Method: method, Verb: verb, Body: body, IdempotencyKey: key})
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(answer, out); err != nil {
			return apperr.Wrap(apperr.Internal, fmt.Errorf("%s %s: decode: %w", app, method, err), "a backend answered something unreadable")
		}
	}
	return nil
}

// appError is the error of an app's answer with an HTTP error status: its
// code, and the app's own {"detail"} unless the code is Internal (whose
// details stay in the app's log).
func appError(app string, status int, body []byte, cause error) error {
	c := apperr.FromHTTPStatus(status)
	msg := defaultMessage(c, app)
	var b struct {
		Detail string `json:"detail"`
	}
	if json.Unmarshal(body, &b) == nil && b.Detail != "" && c != apperr.Internal {
		msg = b.Detail
	}
	return &apperr.Error{Code: c, Message: msg, Err: cause}
}

func defaultMessage(c apperr.Code, app string) string {
	switch c {
	case apperr.Invalid:
		return "invalid input"
	case apperr.TooLarge:
		return "input too large"
	case apperr.NotFound:
		return "not found"
	case apperr.RateLimited:
		return "too many requests; try again later"
	case apperr.Unavailable:
		return app + " is unavailable"
	case apperr.Timeout:
		return app + " did not answer in time"
	default:
		return "internal error"
	}
}

func (c *Client) Memory(ctx context.Context, userID string) (contract.Profile, error) {
	var p contract.Profile
	err := c.call(ctx, c.Timeout, contract.MemoryApp, "memories/"+userID, http.MethodGet, nil, &p)
	return p, err
}

func (c *Client) InitializeMemory(ctx context.Context, userID string, p contract.Profile) (contract.Profile, error) {
	var out contract.InitializeReply
	err := c.call(ctx, c.Timeout, contract.MemoryApp, "memories/"+userID+"/initialize", http.MethodPost, p, &out)
	return out.Metadata, err
}

func (c *Client) Conversation(ctx context.Context, sessionID string) ([]contract.Entry, error) {
	var out contract.HistoryReply
	err := c.call(ctx, c.Timeout, contract.MemoryApp, "conversations/"+sessionID, http.MethodGet, nil, &out)
	return out.History, err
}

func (c *Client) Conversations(ctx context.Context, sessionIDs []string, last int) (map[string][]contract.Entry, error) {
	in := contract.ConversationsRequest{SessionIDs: sessionIDs, Last: last}
	var out contract.ConversationsReply
	if err := c.call(ctx, c.Timeout, contract.MemoryApp, "conversations/batch", http.MethodPost, in, &out); err != nil {
		return nil, err
	}
	m := make(map[string][]contract.Entry, len(out.Conversations))
	for _, conv := range out.Conversations {
		m[conv.SessionID] = conv.History
	}
	return m, nil
}

func (c *Client) Sessions(ctx context.Context, userID string) ([]contract.SessionInfo, error) {
	var out contract.SessionsReply
	err := c.call(ctx, c.Timeout, contract.MemoryApp, "users/"+userID+"/sessions", http.MethodGet, nil, &out)
	return out.Sessions, err
}

func (c *Client) SessionOwner(ctx context.Context, sessionID string) (string, error) {
	var out contract.Owner
	err := c.call(ctx, c.Timeout, contract.MemoryApp, "owners/"+sessionID, http.MethodGet, nil, &out)
	if apperr.CodeOf(err) == apperr.NotFound {
		return "", nil
	}
	return out.UserID, err
}

func (c *Client) ForgetUser(ctx context.Context, userID string) (int, error) {
	var out contract.ForgetReply
	err := c.call(ctx, c.Timeout, contract.MemoryApp, "memories/"+userID, http.MethodDelete, nil, &out)
	return out.SessionsDeleted, err
}

func (c *Client) DeleteConversation(ctx context.Context, sessionID string) (bool, error) {
	err := c.call(ctx, c.Timeout, contract.MemoryApp, "conversations/"+sessionID, http.MethodDelete, nil, nil)
	if apperr.CodeOf(err) == apperr.NotFound {
		return false, nil
	}
	return err == nil, err
}

func body(in ChatInput) contract.ChatRequest {
	b := contract.ChatRequest{UserID: in.UserID, Text: in.Text, Tags: in.Tags}
	if in.SessionID != "" {
		b.Metadata = &contract.ChatMetadata{SessionID: in.SessionID}
	}
	return b
}

// turnKey is the Idempotency-Key a turn is sent with: the client's, or a
// new one, so that a request Dapr repeats after a transport failure (the
// chat-service retry policy) joins the turn the first one started instead
// of starting another.
func turnKey(in ChatInput) string {
	if in.IdempotencyKey != "" {
		return in.IdempotencyKey
	}
	return "gateway-" + uuid.NewString()
}

func (c *Client) SendMessage(ctx context.Context, in ChatInput) (Reply, error) {
	var out contract.ChatReply
	t := c.ChatTimeout
	if t == 0 {
		t = 75 * time.Second
	}
	if err := c.callWithKey(ctx, t, contract.ChatApp, "chat", http.MethodPost, turnKey(in), body(in), &out); err != nil {
		return Reply{}, err
	}
	return Reply{UserID: out.UserID, SessionID: out.Metadata.SessionID, Reply: out.Reply, InstanceID: out.InstanceID,
		Status: out.Status, Timestamp: out.Metadata.Timestamp}, nil
}

func (c *Client) StartChat(ctx context.Context, in ChatInput) (Run, error) {
	var out contract.ChatStarted
	if err := c.callWithKey(ctx, c.Timeout, contract.ChatApp, "chat/async", http.MethodPost, turnKey(in), body(in), &out); err != nil {
		return Run{}, err
	}
	return Run{InstanceID: out.InstanceID, Status: contract.RunPending, UserID: in.UserID, SessionID: out.SessionID}, nil
}

// ChatRun reads a turn; concurrent reads of one turn share one call to
// chat-service.
func (c *Client) ChatRun(ctx context.Context, instanceID string) (*Run, error) {
	ch := c.runs.DoChan(instanceID, func() (any, error) {
		// The call is shared: it is not cut short when the caller that
		// started it goes away (its own timeout still applies).
		return c.ReadChatRun(context.WithoutCancel(ctx), instanceID)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		run := res.Val.(*Run)
		if run == nil {
			return nil, nil
		}
		cp := *run // each caller its own copy
		return &cp, nil
	case <-ctx.Done():
		return nil, apperr.Wrap(apperr.Timeout, ctx.Err(), "the request ended before chat-service answered")
	}
}

func (c *Client) CancelChat(ctx context.Context, instanceID string) (*Run, error) {
	var r Run
	err := c.call(ctx, c.Timeout, contract.ChatApp, "chat/"+instanceID+"/cancel", http.MethodPost, nil, &r)
	if apperr.CodeOf(err) == apperr.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// ReadChatRun reads a turn with a call of its own (a state read after the
// call began, which a joined read may not be: the chatRun poller needs it).
func (c *Client) ReadChatRun(ctx context.Context, instanceID string) (*Run, error) {
	var r Run
	err := c.call(ctx, c.Timeout, contract.ChatApp, "chat/"+instanceID, http.MethodGet, nil, &r)
	if apperr.CodeOf(err) == apperr.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (c *Client) Health(ctx context.Context) Health {
	h := Health{Sidecar: "ok", Apps: map[string]string{}, LLM: "unknown"}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := c.Sidecar.Ping(cctx); err != nil {
		h.Sidecar = "unavailable"
	}
	for _, app := range []string{contract.ChatApp, contract.MemoryApp} {
		var out contract.Health
		err := c.call(cctx, 3*time.Second, app, "health", http.MethodGet, nil, &out)
		switch {
		case err == nil:
			h.Apps[app] = out.Status
		case apperr.CodeOf(err) == apperr.Unavailable && strings.Contains(apperr.MessageOf(err), "is unavailable"):
			h.Apps[app] = "unavailable"
		default:
			h.Apps[app] = "degraded"
		}
		if app == contract.ChatApp && out.LLM != "" {
			h.LLM = out.LLM
		}
	}
	return h
}
