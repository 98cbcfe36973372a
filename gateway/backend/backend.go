// Package backend is how the gateway reaches chat-service and
// agent-memory-service: Dapr service invocation through its own sidecar with
// the go-sdk, a timeout per call, and backend errors turned into apperr codes
// (HTTP status and detail carried by Dapr's gRPC error details).
package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
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
	ForgetUser(ctx context.Context, userID string) (int, error)
	DeleteConversation(ctx context.Context, sessionID string) (bool, error)
	SendMessage(ctx context.Context, in ChatInput) (Reply, error)
	StartChat(ctx context.Context, in ChatInput) (Run, error)
	ChatRun(ctx context.Context, instanceID string) (*Run, error)
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

// Invoker is the part of the Dapr client the backend uses.
type Invoker interface {
	InvokeMethodWithContent(ctx context.Context, appID, methodName, verb string, content *dapr.DataContent) ([]byte, error)
	InvokeMethod(ctx context.Context, appID, methodName, verb string) ([]byte, error)
	GetMetadata(ctx context.Context) (*dapr.GetMetadataResponse, error)
}

// Client is the Backend over Dapr service invocation through the gateway's
// sidecar. Sidecar must come from daprc.Connect, whose interceptors add the
// API token and the trace context without dropping other metadata (such as
// Idempotency-Key).
type Client struct {
	Sidecar     Invoker
	Timeout     time.Duration // per call (default 10s)
	ChatTimeout time.Duration // sendMessage (default 75s)
}

func (c *Client) call(ctx context.Context, timeout time.Duration, app, method, verb string, in, out any) error {
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var body []byte
	var err error
	if in != nil {
		b, merr := json.Marshal(in)
		if merr != nil {
			return apperr.Wrap(apperr.Internal, merr, "encoding failed")
		}
		body, err = c.Sidecar.InvokeMethodWithContent(ctx, app, method, verb, &dapr.DataContent{Data: b, ContentType: "application/json"})
	} else {
		body, err = c.Sidecar.InvokeMethod(ctx, app, method, verb)
	}
	if err != nil {
		return invokeError(app, method, err, ctx.Err())
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return apperr.Wrap(apperr.Internal, fmt.Errorf("%s %s: decode: %w", app, method, err), "a backend answered something unreadable")
		}
	}
	return nil
}

// invokeError maps a service invocation error to an apperr: the app's HTTP
// status (and its {"detail"}, when Dapr passed it whole) when the app
// answered, UNAVAILABLE when the app or the sidecar could not be reached.
func invokeError(app, method string, err, ctxErr error) error {
	cause := fmt.Errorf("invoke %s/%s: %w", app, method, err)
	if errors.Is(ctxErr, context.DeadlineExceeded) {
		return apperr.Wrap(apperr.Timeout, cause, "%s did not answer in time", app)
	}
	st, ok := status.FromError(err)
	if !ok {
		return apperr.Wrap(apperr.Unavailable, cause, "%s is unavailable", app)
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetMetadata()["http.code"] == "" {
			continue
		}
		code, _ := strconv.Atoi(info.GetMetadata()["http.code"])
		c := apperr.FromHTTPStatus(code)
		msg := defaultMessage(c, app)
		var body struct {
			Detail string `json:"detail"`
		}
		if json.Unmarshal([]byte(info.GetMetadata()["http.error_message"]), &body) == nil && body.Detail != "" && c != apperr.Internal {
			msg = body.Detail
		}
		return &apperr.Error{Code: c, Message: msg, Err: cause}
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted:
		return apperr.Wrap(apperr.Unavailable, cause, "%s is unavailable", app)
	case codes.NotFound:
		return apperr.Wrap(apperr.NotFound, cause, "not found")
	case codes.PermissionDenied:
		return apperr.Wrap(apperr.Forbidden, cause, "forbidden")
	case codes.Unauthenticated:
		return apperr.Wrap(apperr.Internal, cause, "internal error") // our own sidecar refused our token
	default:
		return apperr.Wrap(apperr.Unavailable, cause, "%s is unavailable", app)
	}
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

// withIdempotency forwards the key as the Idempotency-Key header: Dapr
// passes gRPC metadata to the app as HTTP headers.
func withIdempotency(ctx context.Context, key string) context.Context {
	if key == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, strings.ToLower(contract.IdempotencyHeader), key)
}

func (c *Client) SendMessage(ctx context.Context, in ChatInput) (Reply, error) {
	var out contract.ChatReply
	t := c.ChatTimeout
	if t == 0 {
		t = 75 * time.Second
	}
	if err := c.call(withIdempotency(ctx, in.IdempotencyKey), t, contract.ChatApp, "chat", http.MethodPost, body(in), &out); err != nil {
		return Reply{}, err
	}
	return Reply{UserID: out.UserID, SessionID: out.Metadata.SessionID, Reply: out.Reply, InstanceID: out.InstanceID,
		Status: out.Status, Timestamp: out.Metadata.Timestamp}, nil
}

func (c *Client) StartChat(ctx context.Context, in ChatInput) (Run, error) {
	var out contract.ChatStarted
	if err := c.call(withIdempotency(ctx, in.IdempotencyKey), c.Timeout, contract.ChatApp, "chat/async", http.MethodPost, body(in), &out); err != nil {
		return Run{}, err
	}
	return Run{InstanceID: out.InstanceID, Status: contract.RunPending, UserID: in.UserID, SessionID: out.SessionID}, nil
}

func (c *Client) ChatRun(ctx context.Context, instanceID string) (*Run, error) {
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
	if _, err := c.Sidecar.GetMetadata(cctx); err != nil {
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
