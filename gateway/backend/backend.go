// Package backend is how the gateway reaches chat-service and
// agent-memory-service (graph.Backend): the services' typed clients
// (internal/api) over Dapr service invocation through the gateway's own
// sidecar, a timeout per call, and the apps' errors as apperr codes with
// their own detail. Two paths reach the sidecar (Sidecar): its HTTP API
// (daprc.HTTP, the default) and its gRPC API with the go-sdk (GRPC, Dapr's
// deprecated gRPC-to-HTTP path); see README, "Service invocation".
package backend

import (
	"context"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/singleflight"

	"github.com/daca-go/daca/graph"
	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

// Sidecar is a way to reach the apps through the gateway's sidecar.
type Sidecar interface {
	api.Caller
	// Ping reports whether the sidecar answers.
	Ping(ctx context.Context) error
}

// Client is the graph.Backend over Dapr service invocation through the
// gateway's sidecar.
type Client struct {
	Sidecar     Sidecar
	Timeout     time.Duration // per call (default 10s)
	ChatTimeout time.Duration // sendMessage (default 75s)

	// runs joins concurrent reads of one turn into one call: a thousand
	// clients subscribing to the same turn at once ask chat-service (and
	// its workflow engine) once.
	runs singleflight.Group
}

var _ graph.Backend = (*Client)(nil)

// timed bounds every call of a Caller by a timeout.
type timed struct {
	api.Caller
	d time.Duration
}

func (t timed) Call(ctx context.Context, r api.Request) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.Caller.Call(ctx, r)
}

func (c *Client) timeout() time.Duration {
	if c.Timeout == 0 {
		return 10 * time.Second
	}
	return c.Timeout
}

func (c *Client) memory() api.Memory { return api.Memory{Caller: timed{c.Sidecar, c.timeout()}} }
func (c *Client) chat() api.ChatService {
	return api.ChatService{Caller: timed{c.Sidecar, c.timeout()}}
}

func (c *Client) Memory(ctx context.Context, userID string) (contract.Profile, error) {
	return c.memory().Profile(ctx, userID)
}

func (c *Client) InitializeMemory(ctx context.Context, userID string, p contract.Profile) (contract.Profile, error) {
	return c.memory().Initialize(ctx, userID, p)
}

func (c *Client) Conversation(ctx context.Context, sessionID string) ([]contract.Entry, error) {
	return c.memory().History(ctx, sessionID, api.HistoryOptions{})
}

func (c *Client) Conversations(ctx context.Context, sessionIDs []string, last int) (map[string][]contract.Entry, error) {
	return c.memory().Histories(ctx, sessionIDs, last)
}

func (c *Client) Sessions(ctx context.Context, userID string) ([]contract.SessionInfo, error) {
	return c.memory().Sessions(ctx, userID)
}

func (c *Client) Usage(ctx context.Context, userID string, since time.Time) (contract.UsageReply, error) {
	return c.memory().Usage(ctx, userID, since)
}

func (c *Client) SessionOwner(ctx context.Context, sessionID string) (string, error) {
	return c.memory().Owner(ctx, sessionID)
}

func (c *Client) ForgetUser(ctx context.Context, userID string) (int, error) {
	return c.memory().Forget(ctx, userID)
}

func (c *Client) DeleteConversation(ctx context.Context, sessionID string) (bool, error) {
	return c.memory().DeleteConversation(ctx, sessionID)
}

func request(in graph.ChatInput) contract.ChatRequest {
	b := contract.ChatRequest{UserID: in.UserID, Text: in.Text, Tags: in.Tags, OnBusy: in.OnBusy}
	if in.SessionID != "" {
		b.Metadata = &contract.ChatMetadata{SessionID: in.SessionID}
	}
	return b
}

// turnKey is the Idempotency-Key a turn is sent with: the client's, or a
// new one, so that a request Dapr repeats after a transport failure (the
// chat-service retry policy) joins the turn the first one started instead
// of starting another.
func turnKey(in graph.ChatInput) string {
	if in.IdempotencyKey != "" {
		return in.IdempotencyKey
	}
	return "gateway-" + uuid.NewString()
}

func (c *Client) SendMessage(ctx context.Context, in graph.ChatInput) (contract.ChatReply, error) {
	t := c.ChatTimeout
	if t == 0 {
		t = 75 * time.Second
	}
	return api.ChatService{Caller: timed{c.Sidecar, t}}.Send(ctx, request(in), turnKey(in))
}

func (c *Client) StartChat(ctx context.Context, in graph.ChatInput) (contract.ChatRun, error) {
	out, err := c.chat().Start(ctx, request(in), turnKey(in))
	if err != nil {
		return contract.ChatRun{}, err
	}
	status := out.Status
	if status == "" { // an older chat-service
		status = contract.RunPending
	}
	return contract.ChatRun{InstanceID: out.InstanceID, Status: status, UserID: in.UserID, SessionID: out.SessionID}, nil
}

// ChatRun reads a turn; concurrent reads of one turn share one call to
// chat-service.
func (c *Client) ChatRun(ctx context.Context, instanceID string) (*contract.ChatRun, error) {
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
		run := res.Val.(*contract.ChatRun)
		if run == nil {
			return nil, nil
		}
		cp := *run // each caller its own copy
		return &cp, nil
	case <-ctx.Done():
		return nil, apperr.Wrap(apperr.Timeout, ctx.Err(), "the request ended before chat-service answered")
	}
}

func (c *Client) CancelChat(ctx context.Context, instanceID string) (*contract.ChatRun, error) {
	return c.chat().Cancel(ctx, instanceID)
}

func (c *Client) Tools(ctx context.Context) ([]contract.ToolInfo, error) {
	return c.chat().Tools(ctx)
}

func (c *Client) PendingApprovals(ctx context.Context, userID string) ([]contract.Approval, error) {
	return c.chat().PendingApprovals(ctx, userID)
}

func (c *Client) Approval(ctx context.Context, id string) (*contract.Approval, error) {
	return c.chat().Approval(ctx, id)
}

func (c *Client) DecideToolCall(ctx context.Context, id string, d contract.Decision) (contract.Approval, error) {
	return c.chat().Decide(ctx, id, d)
}

// ReadChatRun reads a turn with a call of its own (a state read after the
// call began, which a joined read may not be: the chatRun poller needs it).
func (c *Client) ReadChatRun(ctx context.Context, instanceID string) (*contract.ChatRun, error) {
	return c.chat().Run(ctx, instanceID)
}

func (c *Client) Health(ctx context.Context) graph.BackendHealth {
	h := graph.BackendHealth{Sidecar: "ok", Apps: map[string]string{}, LLM: "unknown"}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := c.Sidecar.Ping(ctx); err != nil {
		h.Sidecar = "unavailable"
	}
	apps := []struct {
		id     string
		health func(context.Context) (contract.Health, error)
	}{{contract.ChatApp, c.chat().Health}, {contract.MemoryApp, c.memory().Health}}
	for _, app := range apps {
		out, err := app.health(ctx)
		switch {
		case err == nil:
			h.Apps[app.id] = out.Status
		case apperr.CodeOf(err) == apperr.Unavailable && strings.Contains(apperr.MessageOf(err), "is unavailable"):
			h.Apps[app.id] = "unavailable"
		default:
			h.Apps[app.id] = "degraded"
		}
		if app.id == contract.ChatApp && out.LLM != "" {
			h.LLM = out.LLM
		}
	}
	return h
}
