package daprc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
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
