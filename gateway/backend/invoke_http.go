package backend

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

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

// maxAnswer is the largest answer read from an app.
const maxAnswer = 16 << 20

// HTTP invokes through the sidecar's HTTP API
// (POST /v1.0/invoke/<app>/method/<method>): Dapr's supported path, on
// which the app's status and body come back whole and the resiliency
// policy's matching decides which answers are retried.
type HTTP struct {
	base   string // http://127.0.0.1:<DAPR_HTTP_PORT>
	token  string // DAPR_API_TOKEN
	client *http.Client
}

// NewHTTP returns the HTTP path to the sidecar listening on 127.0.0.1:port,
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

// Invoke implements Invocation.
func (h *HTTP) Invoke(ctx context.Context, r Request) ([]byte, error) {
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Verb, h.base+"/v1.0/invoke/"+r.App+"/method/"+r.Method, body)
	if err != nil {
		return nil, apperr.Wrap(apperr.Internal, err, "internal error")
	}
	if r.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if h.token != "" {
		req.Header.Set("dapr-api-token", h.token)
	}
	if r.IdempotencyKey != "" {
		req.Header.Set(contract.IdempotencyHeader, r.IdempotencyKey)
	}
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := h.client.Do(req)
	if err != nil {
		cause := fmt.Errorf("invoke %s/%s: %w", r.App, r.Method, err)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, apperr.Wrap(apperr.Timeout, cause, "%s did not answer in time", r.App)
		}
		return nil, apperr.Wrap(apperr.Unavailable, cause, "%s is unavailable", r.App)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		cause := fmt.Errorf("invoke %s/%s: reading the answer: %w", r.App, r.Method, err)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, apperr.Wrap(apperr.Timeout, cause, "%s did not answer in time", r.App)
		}
		return nil, apperr.Wrap(apperr.Unavailable, cause, "%s is unavailable", r.App)
	}
	if resp.StatusCode/100 == 2 {
		return out, nil
	}
	return nil, httpError(r.App, r.Method, resp.StatusCode, out, ctx.Err())
}

// httpError maps a non-2xx answer of the sidecar's HTTP API. The sidecar's
// own errors ({"errorCode": "ERR_…"}: the app could not be reached, a
// policy refused the call, our token was refused) are told apart from the
// app's answers ({"detail": …}), which keep their status and detail.
func httpError(app, method string, status int, body []byte, ctxErr error) error {
	cause := fmt.Errorf("invoke %s/%s: HTTP %d: %.300s", app, method, status, body)
	if errors.Is(ctxErr, context.DeadlineExceeded) {
		return apperr.Wrap(apperr.Timeout, cause, "%s did not answer in time", app)
	}
	var dapr struct {
		ErrorCode string `json:"errorCode"`
	}
	if json.Unmarshal(body, &dapr) == nil && dapr.ErrorCode != "" {
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

// Ping implements Invocation: the sidecar's health endpoint.
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
