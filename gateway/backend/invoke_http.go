package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/daprc"
)

// HTTP invokes through the sidecar's HTTP API (daprc.HTTP): Dapr's
// supported path, on which the app's status and body come back whole and
// the resiliency policy's matching decides which answers are retried.
type HTTP struct{ Sidecar *daprc.HTTP }

// NewHTTP returns the HTTP path to the sidecar listening on 127.0.0.1:port,
// authenticated with the Dapr API token (empty: none).
func NewHTTP(port int, token string) HTTP { return HTTP{Sidecar: daprc.NewHTTP(port, token)} }

// Invoke implements Invocation.
func (h HTTP) Invoke(ctx context.Context, r Request) ([]byte, error) {
	var header http.Header
	if r.IdempotencyKey != "" {
		header = http.Header{contract.IdempotencyHeader: {r.IdempotencyKey}}
	}
	status, out, err := h.Sidecar.Invoke(ctx, r.App, r.Method, r.Verb, r.Body, header)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, apperr.Wrap(apperr.Timeout, err, "%s did not answer in time", r.App)
		}
		return nil, apperr.Wrap(apperr.Unavailable, err, "%s is unavailable", r.App)
	}
	if status/100 == 2 {
		return out, nil
	}
	return nil, httpError(r.App, r.Method, status, out, ctx.Err())
}

// Ping implements Invocation.
func (h HTTP) Ping(ctx context.Context) error { return h.Sidecar.Ping(ctx) }

// httpError maps a non-2xx answer of the sidecar's HTTP API. The sidecar's
// own errors (the app could not be reached, a policy refused the call, our
// token was refused) are told apart from the app's answers ({"detail"}),
// which keep their status and detail.
func httpError(app, method string, status int, body []byte, ctxErr error) error {
	cause := fmt.Errorf("invoke %s/%s: HTTP %d: %.300s", app, method, status, body)
	if errors.Is(ctxErr, context.DeadlineExceeded) {
		return apperr.Wrap(apperr.Timeout, cause, "%s did not answer in time", app)
	}
	if daprc.IsDaprError(body) {
		switch status {
		case http.StatusUnauthorized:
			return apperr.Wrap(apperr.Internal, cause, "internal error") // our own sidecar refused our token
		case http.StatusForbidden:
			return apperr.Wrap(apperr.Forbidden, cause, "forbidden")
		default:
			return apperr.Wrap(apperr.Unavailable, cause, "%s is unavailable", app)
		}
	}
	return appError(app, status, body, cause)
}
