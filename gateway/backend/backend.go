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
	"github.com/daca-go/daca/internal/chat"
	"github.com/daca-go/daca/internal/memory"
)

// App ids of the backends.
const (
	ChatApp   = "chat-service"
	MemoryApp = "agent-memory-service"
)

// Backend is what the resolvers call.
type Backend interface {
	Memory(ctx context.Context, userID string) (memory.Profile, error)
	InitializeMemory(ctx context.Context, userID string, p memory.Profile) (memory.Profile, error)
	Conversation(ctx context.Context, sessionID string) ([]memory.Entry, error)
	// Conversations reads several histories in one call (at most
	// memory.MaxBatch ids), the last `last` entries of each when last > 0.
	Conversations(ctx context.Context, sessionIDs []string, last int) (map[string][]memory.Entry, error)
	Sessions(ctx context.Context, userID string) ([]memory.SessionInfo, error)
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
	Status     string
	Timestamp  time.Time
}

// Run is a chat turn as chat-service describes it.
type Run = chat.Run

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

// Dapr is the Backend over Dapr service invocation. The client must come
// from daprc.Connect, whose interceptors add the API token and the trace
// context without dropping other metadata (such as Idempotency-Key).
type Dapr struct {
	C           Invoker
	Timeout     time.Duration // per call (default 10s)
	ChatTimeout time.Duration // sendMessage (default 75s)
}

func (d *Dapr) call(ctx context.Context, timeout time.Duration, app, method, verb string, in, out any) error {
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
		body, err = d.C.InvokeMethodWithContent(ctx, app, method, verb, &dapr.DataContent{Data: b, ContentType: "application/json"})
	} else {
		body, err = d.C.InvokeMethod(ctx, app, method, verb)
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

func (d *Dapr) Memory(ctx context.Context, userID string) (memory.Profile, error) {
	var p memory.Profile
	err := d.call(ctx, d.Timeout, MemoryApp, "memories/"+userID, http.MethodGet, nil, &p)
	return p, err
}

func (d *Dapr) InitializeMemory(ctx context.Context, userID string, p memory.Profile) (memory.Profile, error) {
	var out struct {
		Metadata memory.Profile `json:"metadata"`
	}
	err := d.call(ctx, d.Timeout, MemoryApp, "memories/"+userID+"/initialize", http.MethodPost, p, &out)
	return out.Metadata, err
}

func (d *Dapr) Conversation(ctx context.Context, sessionID string) ([]memory.Entry, error) {
	var out struct {
		History []memory.Entry `json:"history"`
	}
	err := d.call(ctx, d.Timeout, MemoryApp, "conversations/"+sessionID, http.MethodGet, nil, &out)
	return out.History, err
}

func (d *Dapr) Conversations(ctx context.Context, sessionIDs []string, last int) (map[string][]memory.Entry, error) {
	in := map[string]any{"session_ids": sessionIDs, "last": last}
	var out struct {
		Conversations []struct {
			SessionID string         `json:"session_id"`
			History   []memory.Entry `json:"history"`
		} `json:"conversations"`
	}
	if err := d.call(ctx, d.Timeout, MemoryApp, "conversations/batch", http.MethodPost, in, &out); err != nil {
		return nil, err
	}
	m := make(map[string][]memory.Entry, len(out.Conversations))
	for _, c := range out.Conversations {
		m[c.SessionID] = c.History
	}
	return m, nil
}

func (d *Dapr) Sessions(ctx context.Context, userID string) ([]memory.SessionInfo, error) {
	var out struct {
		Sessions []memory.SessionInfo `json:"sessions"`
	}
	err := d.call(ctx, d.Timeout, MemoryApp, "users/"+userID+"/sessions", http.MethodGet, nil, &out)
	return out.Sessions, err
}

func (d *Dapr) ForgetUser(ctx context.Context, userID string) (int, error) {
	var out struct {
		SessionsDeleted int `json:"sessions_deleted"`
	}
	err := d.call(ctx, d.Timeout, MemoryApp, "memories/"+userID, http.MethodDelete, nil, &out)
	return out.SessionsDeleted, err
}

func (d *Dapr) DeleteConversation(ctx context.Context, sessionID string) (bool, error) {
	err := d.call(ctx, d.Timeout, MemoryApp, "conversations/"+sessionID, http.MethodDelete, nil, nil)
	if apperr.CodeOf(err) == apperr.NotFound {
		return false, nil
	}
	return err == nil, err
}

type chatBody struct {
	UserID   string            `json:"user_id"`
	Text     string            `json:"text"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Tags     []string          `json:"tags,omitempty"`
}

func body(in ChatInput) chatBody {
	b := chatBody{UserID: in.UserID, Text: in.Text, Tags: in.Tags}
	if in.SessionID != "" {
		b.Metadata = map[string]string{"session_id": in.SessionID}
	}
	return b
}

// withIdempotency forwards the key as the Idempotency-Key header: Dapr
// passes gRPC metadata to the app as HTTP headers.
func withIdempotency(ctx context.Context, key string) context.Context {
	if key == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "idempotency-key", key)
}

func (d *Dapr) SendMessage(ctx context.Context, in ChatInput) (Reply, error) {
	var out struct {
		UserID     string `json:"user_id"`
		Reply      string `json:"reply"`
		Status     string `json:"status"`
		InstanceID string `json:"instance_id"`
		Metadata   struct {
			SessionID string    `json:"session_id"`
			Timestamp time.Time `json:"timestamp"`
		} `json:"metadata"`
	}
	t := d.ChatTimeout
	if t == 0 {
		t = 75 * time.Second
	}
	if err := d.call(withIdempotency(ctx, in.IdempotencyKey), t, ChatApp, "chat", http.MethodPost, body(in), &out); err != nil {
		return Reply{}, err
	}
	return Reply{UserID: out.UserID, SessionID: out.Metadata.SessionID, Reply: out.Reply, InstanceID: out.InstanceID,
		Status: out.Status, Timestamp: out.Metadata.Timestamp}, nil
}

func (d *Dapr) StartChat(ctx context.Context, in ChatInput) (Run, error) {
	var out struct {
		InstanceID string `json:"instance_id"`
		SessionID  string `json:"session_id"`
	}
	if err := d.call(withIdempotency(ctx, in.IdempotencyKey), d.Timeout, ChatApp, "chat/async", http.MethodPost, body(in), &out); err != nil {
		return Run{}, err
	}
	return Run{InstanceID: out.InstanceID, Status: "PENDING", UserID: in.UserID, SessionID: out.SessionID}, nil
}

func (d *Dapr) ChatRun(ctx context.Context, instanceID string) (*Run, error) {
	var r Run
	err := d.call(ctx, d.Timeout, ChatApp, "chat/"+instanceID, http.MethodGet, nil, &r)
	if apperr.CodeOf(err) == apperr.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (d *Dapr) Health(ctx context.Context) Health {
	h := Health{Sidecar: "ok", Apps: map[string]string{}, LLM: "unknown"}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := d.C.GetMetadata(cctx); err != nil {
		h.Sidecar = "unavailable"
	}
	for _, app := range []string{ChatApp, MemoryApp} {
		var out struct {
			Status string `json:"status"`
			LLM    string `json:"llm"`
		}
		err := d.call(cctx, 3*time.Second, app, "health", http.MethodGet, nil, &out)
		switch {
		case err == nil:
			h.Apps[app] = out.Status
		case apperr.CodeOf(err) == apperr.Unavailable && strings.Contains(apperr.MessageOf(err), "is unavailable"):
			h.Apps[app] = "unavailable"
		default:
			h.Apps[app] = "degraded"
		}
		if app == ChatApp && out.LLM != "" {
			h.LLM = out.LLM
		}
	}
	return h
}
