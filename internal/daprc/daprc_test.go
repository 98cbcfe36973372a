package daprc

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

// traced is a context with a sampled span context, as an incoming request's.
func traced() context.Context {
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled})
	return trace.ContextWithSpanContext(context.Background(), sc)
}

// TestOutgoing: the interceptor's metadata carries the API token and the
// trace context, and keeps what was there (the go-sdk's own interceptor
// once replaced it, dropping Idempotency-Key).
func TestOutgoing(t *testing.T) {
	withW3C(t)
	base := metadata.AppendToOutgoingContext(traced(), "idempotency-key", "k1")
	tests := []struct {
		name, token string
		ctx         context.Context
		want        map[string]string // "" value: absent
	}{
		{"token, trace and what was there", "tok", base, map[string]string{"dapr-api-token": "tok", "idempotency-key": "k1", "traceparent": "00-01020300000000000000000000000000-0405000000000000-01"}},
		{"no token", "", base, map[string]string{"dapr-api-token": "", "idempotency-key": "k1"}},
		{"nothing to add", "", context.Background(), map[string]string{"dapr-api-token": "", "traceparent": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md, _ := metadata.FromOutgoingContext(Outgoing(tt.ctx, tt.token))
			for k, want := range tt.want {
				got := strings.Join(md.Get(k), ",")
				if got != want {
					t.Errorf("%s = %q; want %q", k, got, want)
				}
			}
		})
	}
}

// withW3C installs the W3C trace context propagator for the test, as
// telemetry.Setup does in the apps.
func withW3C(t *testing.T) {
	t.Helper()
	prev := otelPropagator()
	setPropagator(propagation.TraceContext{})
	t.Cleanup(func() { setPropagator(prev) })
}

// sidecar is the sidecar's HTTP invocation API: it records the last
// request and answers as the app (or Dapr) would.
type sidecar struct {
	last   *http.Request
	answer func(w http.ResponseWriter, r *http.Request)
}

func (s *sidecar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.last = r
	s.answer(w, r)
}

func newHTTP(t *testing.T, s *sidecar) *HTTP {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	port, _ := strconv.Atoi(srv.URL[strings.LastIndex(srv.URL, ":")+1:])
	return NewHTTP(port, "tok")
}

func TestCall(t *testing.T) {
	withW3C(t)
	answer := func(status int, body string) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
			io.WriteString(w, body)
		}
	}
	tests := []struct {
		name    string
		answer  func(http.ResponseWriter, *http.Request)
		code    apperr.Code
		msg     string
		sidecar bool // the error is the sidecar's own (api.ErrSidecar)
	}{
		{"the app's 200", answer(200, `{"ok":true}`), "", "", false},
		{"the app's 404 with its detail", answer(404, `{"detail":"session s1 not found"}`), apperr.NotFound, "session s1 not found", false},
		{"the app's 403 is the app's", answer(403, `{"detail":"session s1 belongs to another user"}`), apperr.Forbidden, "session s1 belongs to another user", false},
		{"the app's 500 hides its detail", answer(500, `{"detail":"panic at x.go:12"}`), apperr.Internal, "internal error", false},
		{"an access policy refused the call", answer(403, `{"errorCode":"ERR_DIRECT_INVOKE","message":"access control policy has denied access"}`), apperr.Forbidden, "forbidden", true},
		{"Dapr could not reach the app", answer(500, `{"errorCode":"ERR_DIRECT_INVOKE","message":"couldn't find service"}`), apperr.Unavailable, "agent-memory-service is unavailable", true},
		{"our token refused", answer(401, `{"errorCode":"ERR_UNAUTHORIZED"}`), apperr.Internal, "internal error", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sidecar{answer: tt.answer}
			h := newHTTP(t, s)
			out, err := h.Call(traced(), api.Request{App: contract.MemoryApp, Method: "owners/s1", Verb: http.MethodPut, Body: []byte(`{}`), IdempotencyKey: "k1"})
			if apperr.CodeOf(err) != tt.code || (err != nil && apperr.MessageOf(err) != tt.msg) {
				t.Fatalf("%q %q; want %q %q", apperr.CodeOf(err), apperr.MessageOf(err), tt.code, tt.msg)
			}
			if errors.Is(err, api.ErrSidecar) != tt.sidecar {
				t.Fatalf("ErrSidecar %v; want %v (%v)", errors.Is(err, api.ErrSidecar), tt.sidecar, err)
			}
			if err == nil && string(out) != `{"ok":true}` {
				t.Fatalf("answer %s", out)
			}
			r := s.last
			if r.Method != http.MethodPut || r.URL.Path != "/v1.0/invoke/agent-memory-service/method/owners/s1" ||
				r.Header.Get("dapr-api-token") != "tok" || r.Header.Get(contract.IdempotencyHeader) != "k1" ||
				r.Header.Get("Content-Type") != "application/json" || !strings.HasPrefix(r.Header.Get("traceparent"), "00-0102030") {
				t.Fatalf("request %s %s %v", r.Method, r.URL, r.Header)
			}
		})
	}
}

func TestCallUnreachable(t *testing.T) {
	t.Parallel()
	_, err := NewHTTP(1, "tok").Call(context.Background(), api.Request{App: contract.ChatApp, Method: "chat", Verb: http.MethodPost})
	if apperr.CodeOf(err) != apperr.Unavailable || apperr.MessageOf(err) != "chat-service is unavailable" {
		t.Fatalf("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	if _, err := NewHTTP(1, "tok").Call(ctx, api.Request{App: contract.ChatApp, Method: "chat", Verb: http.MethodPost}); apperr.CodeOf(err) != apperr.Timeout {
		t.Fatalf("past its deadline: %v; want TIMEOUT", err)
	}
}

func otelPropagator() propagation.TextMapPropagator { return otel.GetTextMapPropagator() }
func setPropagator(p propagation.TextMapPropagator) { otel.SetTextMapPropagator(p) }
