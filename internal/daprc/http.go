package daprc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

// maxAnswer is the largest answer read from an app.
const maxAnswer = 16 << 20

// HTTP is service invocation through the sidecar's HTTP API
// (/v1.0/invoke/<app>/method/<method>): Dapr's supported path, on which
// the app's status and body come back whole and a resiliency policy's
// matching decides which answers are retried.
type HTTP struct {
	base   string // http://127.0.0.1:<DAPR_HTTP_PORT>
	token  string // DAPR_API_TOKEN
	client *http.Client
}

// NewHTTP returns the HTTP API of the sidecar on 127.0.0.1:port,
// authenticated with the Dapr API token (empty: none).
func NewHTTP(port int, token string) *HTTP {
	return &HTTP{
		base:  "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		token: token,
		client: &http.Client{Transport: &http.Transport{
			Proxy:               nil, // loopback to the sidecar: never through a proxy
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        512,
			MaxIdleConnsPerHost: 512,
			IdleConnTimeout:     90 * time.Second,
		}},
	}
}

// Invoke calls method of app with verb and a JSON body (nil: none), with
// the trace context of ctx and the extra header. It returns the answer's
// status and body — the app's, or the sidecar's own error
// ({"errorCode": "ERR_…"}) — or an error when the sidecar could not be
// reached or the answer not read.
func (h *HTTP) Invoke(ctx context.Context, app, method, verb string, body []byte, header http.Header) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, verb, h.base+"/v1.0/invoke/"+app+"/method/"+method, rd)
	if err != nil {
		return 0, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if h.token != "" {
		req.Header.Set("dapr-api-token", h.token)
	}
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("invoke %s/%s: %w", app, method, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, nil, fmt.Errorf("invoke %s/%s: reading the answer: %w", app, method, err)
	}
	return resp.StatusCode, out, nil
}

// Call implements api.Caller: Invoke, with the answer mapped to an
// apperr-coded error unless it is a 2xx.
func (h *HTTP) Call(ctx context.Context, r api.Request) ([]byte, error) {
	var header http.Header
	if r.IdempotencyKey != "" {
		header = http.Header{contract.IdempotencyHeader: {r.IdempotencyKey}}
	}
	status, out, err := h.Invoke(ctx, r.App, r.Method, r.Verb, r.Body, header)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, apperr.Wrap(apperr.Timeout, err, "%s did not answer in time", r.App)
		}
		return nil, apperr.Wrap(apperr.Unavailable, err, "%s is unavailable", r.App)
	}
	if status/100 == 2 {
		return out, nil
	}
	return nil, AnswerError(r.App, r.Method, status, out, ctx.Err())
}

// AnswerError maps a non-2xx answer of the sidecar's HTTP API. The
// sidecar's own errors (the app could not be reached, a policy refused the
// call, our token was refused) are told apart from the app's answers
// ({"detail"}), which keep their status and detail (api.AppError); the
// sidecar's wrap api.ErrSidecar.
func AnswerError(app, method string, status int, body []byte, ctxErr error) error {
	cause := fmt.Errorf("invoke %s/%s: HTTP %d: %.300s", app, method, status, body)
	if errors.Is(ctxErr, context.DeadlineExceeded) {
		return apperr.Wrap(apperr.Timeout, cause, "%s did not answer in time", app)
	}
	if IsDaprError(body) {
		cause = fmt.Errorf("%w: %w", api.ErrSidecar, cause)
		switch status {
		case http.StatusUnauthorized:
			return apperr.Wrap(apperr.Internal, cause, "internal error") // our own sidecar refused our token
		case http.StatusForbidden:
			return apperr.Wrap(apperr.Forbidden, cause, "forbidden")
		default:
			return apperr.Wrap(apperr.Unavailable, cause, "%s is unavailable", app)
		}
	}
	return api.AppError(app, status, body, cause)
}

// Ping asks the sidecar's health endpoint.
func (h *HTTP) Ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.base+"/v1.0/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("sidecar health: %s", resp.Status)
	}
	return nil
}

// IsDaprError reports whether an answer's body is the sidecar's own error
// ({"errorCode": "ERR_…"}: the app could not be reached, a policy refused
// the call, the token was refused) rather than the app's.
func IsDaprError(body []byte) bool {
	var e struct {
		ErrorCode string `json:"errorCode"`
	}
	return json.Unmarshal(body, &e) == nil && e.ErrorCode != ""
}
