// Package api is the one typed client of each service's HTTP API, with the
// routes it answers on: Memory (agent-memory-service) and Chat
// (chat-service). The gateway's backend and chat-service's activities call
// the services through these clients, and each service mounts its handlers
// on the same Route values, so a route is spelled once: from a resolver,
// "go to definition" leads to the route and from there to its handler.
//
// The clients speak through a Caller (service invocation through the
// caller's own Dapr sidecar: daprc.HTTP, or the gateway's gRPC path); the
// bodies are the contract's types.
package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

// Route is one endpoint of a service: its HTTP verb and its path pattern
// with {name} parameters (chi's syntax, which the services mount).
type Route struct {
	Verb, Pattern string
}

// Path is the route's path with its parameters filled in order (each
// escaped), without the leading slash: the method name of a Dapr service
// invocation. It panics when the count of args does not match the pattern,
// a programming error.
func (r Route) Path(args ...string) string {
	var b strings.Builder
	rest := strings.TrimPrefix(r.Pattern, "/")
	for {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			break
		}
		end := strings.IndexByte(rest[open:], '}')
		if len(args) == 0 || end < 0 {
			panic("api: " + r.Pattern + ": too few arguments")
		}
		b.WriteString(rest[:open])
		b.WriteString(url.PathEscape(args[0]))
		args, rest = args[1:], rest[open+end+1:]
	}
	if len(args) > 0 {
		panic("api: " + r.Pattern + ": too many arguments")
	}
	b.WriteString(rest)
	return b.String()
}

// Path parameters of the routes (chi.URLParam names).
const (
	ParamUserID     = "user_id"
	ParamSessionID  = "session_id"
	ParamInstanceID = "instance_id"
	ParamApprovalID = "approval_id"
	ParamJobName    = "job_name"
)

// Health is every app's GET /health.
var Health = Route{http.MethodGet, "/health"}

// Request is one service invocation.
type Request struct {
	App, Method, Verb string
	Body              []byte // JSON; nil for none
	IdempotencyKey    string // sent as the Idempotency-Key header when set
}

// Caller reaches an app through the caller's sidecar. Call returns the app's
// 2xx answer, or an apperr-coded error: the app's own status and detail when
// it answered otherwise (AppError), Unavailable or Timeout when it could not
// be reached; an error of the sidecar's own wraps ErrSidecar.
type Caller interface {
	Call(ctx context.Context, r Request) ([]byte, error)
}

// ErrSidecar marks an error the sidecar answered itself (the app could not
// be reached, a policy refused the call, our token was refused), as opposed
// to the app's own answer.
var ErrSidecar = fmt.Errorf("answered by the sidecar")

// call invokes route of app with in as its JSON body (nil: none) and decodes
// the answer into out (nil: ignored).
func call(ctx context.Context, c Caller, app string, route Route, path, key string, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return apperr.Wrap(apperr.Internal, err, "encoding failed")
		}
		body = b
	}
	answer, err := c.Call(ctx, Request{App: app, Method: path, Verb: route.Verb, Body: body, IdempotencyKey: key})
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(answer, out); err != nil {
			return apperr.Wrap(apperr.Internal, fmt.Errorf("%s %s: decode: %w", app, path, err), "a backend answered something unreadable")
		}
	}
	return nil
}

// AppError is the error of an app's answer with an HTTP error status: its
// code, and the app's own {"detail"} unless the code is Internal (whose
// details stay in the app's log).
//
// A status stands for several codes (429: rate limited, or a quota used
// up): the app's own "code" says which, and its "retry_after" (seconds)
// when to try again.
func AppError(app string, status int, body []byte, cause error) error {
	c := apperr.FromHTTPStatus(status)
	var b struct {
		Detail     string    `json:"detail"`
		Code       string    `json:"code"`
		RetryAfter int       `json:"retry_after"`
		ResetsAt   time.Time `json:"resets_at"`
	}
	parsed := json.Unmarshal(body, &b) == nil
	if parsed && apperr.Code(b.Code) == apperr.ResourceExhausted && status == apperr.HTTPStatus(apperr.ResourceExhausted) {
		c = apperr.ResourceExhausted
	}
	msg := defaultMessage(c, app)
	if parsed && b.Detail != "" && c != apperr.Internal {
		msg = b.Detail
	}
	e := &apperr.Error{Code: c, Message: msg, Err: cause}
	if parsed && b.RetryAfter > 0 {
		e.RetryAfter = time.Duration(b.RetryAfter) * time.Second
	}
	if parsed && c == apperr.ResourceExhausted {
		e.ResetsAt = b.ResetsAt
	}
	return e
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

// health reads app's GET /health.
func health(ctx context.Context, c Caller, app string) (contract.Health, error) {
	var out contract.Health
	err := call(ctx, c, app, Health, Health.Path(), "", nil, &out)
	return out, err
}
