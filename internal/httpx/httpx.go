// Package httpx holds the HTTP plumbing shared by the services: JSON bodies
// with size limits, errors answered as {"detail": ...} with the status of
// their code, id validation, and middleware (request id, logging, recovery,
// APP_API_TOKEN).
package httpx

import (
	"bufio"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/logging"
	"github.com/daca-go/daca/internal/telemetry"
)

// MaxBody is the largest request body a service reads.
const MaxBody = 1 << 20

// Decode reads a JSON body of at most MaxBody bytes into v.
func Decode(w http.ResponseWriter, r *http.Request, v any) error {
	body := http.MaxBytesReader(w, r.Body, MaxBody)
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return apperr.New(apperr.TooLarge, "request body is larger than %d bytes", MaxBody)
		}
		if errors.Is(err, io.EOF) {
			return apperr.New(apperr.Invalid, "request body is empty; want a JSON object")
		}
		return apperr.Wrap(apperr.Invalid, err, "malformed JSON: %s", jsonProblem(err))
	}
	return nil
}

func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "syntax error at byte " + strconv.FormatInt(se.Offset, 10)
	case errors.As(err, &te):
		return "field " + strconv.Quote(te.Field) + " must be " + te.Type.String()
	default:
		return "cannot be parsed"
	}
}

// JSON writes v with the status.
func JSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Error answers err as {"detail": message, "code": code, "retry_after":
// seconds (when known)} with the status of its code and logs the internal
// cause with the request's logger.
func Error(w http.ResponseWriter, r *http.Request, base *slog.Logger, err error) {
	code := apperr.CodeOf(err)
	status := apperr.HTTPStatus(code)
	log := logging.From(r.Context(), base)
	if status >= 500 {
		log.Error("request failed", "status", status, "code", code, "err", err)
	} else {
		log.Info("request refused", "status", status, "code", code, "err", err)
	}
	body := map[string]any{"detail": apperr.MessageOf(err), "code": string(code)}
	if ra := apperr.RetryAfterOf(err); ra > 0 {
		secs := int((ra + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		body["retry_after"] = secs
	}
	var ae *apperr.Error
	if errors.As(err, &ae) && !ae.ResetsAt.IsZero() {
		body["resets_at"] = ae.ResetsAt.UTC().Format(time.RFC3339)
	}
	JSON(w, status, body)
}

// IsProbe reports whether path is a health probe or the metrics scrape:
// open to everyone (no app token), not logged, not traced, not counted.
func IsProbe(path string) bool {
	switch path {
	case "/health", "/healthz", "/readyz", "/metrics":
		return true
	}
	return false
}

// RequestID takes X-Request-Id (or the trace id of traceparent) or makes one,
// echoes it, and puts a logger carrying it (and the trace id) in the context.
func RequestID(base *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.Header.Get("X-Request-Id")
			if id == "" || len(id) > 128 {
				id = newRequestID()
			}
			w.Header().Set("X-Request-Id", id)
			args := []any{"request_id", id}
			tid := telemetry.TraceID(r.Context())
			if tid == "" {
				tid = TraceID(r.Header.Get("traceparent"))
			}
			if tid != "" {
				args = append(args, "trace_id", tid)
			}
			ctx := logging.With(r.Context(), base, args...)
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// newRequestID is a random (version 4) UUID from the runtime's fast
// random source: a request id must be unique, not secret, and crypto/rand
// cost a system call per request.
func newRequestID() string {
	var u uuid.UUID
	binary.LittleEndian.PutUint64(u[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(u[8:], rand.Uint64())
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return u.String()
}

// TraceID returns the trace id of a W3C traceparent header, or "".
func TraceID(traceparent string) string {
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		return ""
	}
	return parts[1]
}

// StatusWriter records the status a handler answered with; it keeps
// hijacking (websockets) and flushing working.
type StatusWriter struct {
	http.ResponseWriter
	status int
}

// NewStatusWriter wraps w.
func NewStatusWriter(w http.ResponseWriter) *StatusWriter { return &StatusWriter{ResponseWriter: w} }

// Status is the answered status (200 when the handler only wrote a body,
// 0 when it answered nothing).
func (s *StatusWriter) Status() int { return s.status }

func (s *StatusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (websockets).
func (s *StatusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Hijack hands the connection over (websocket upgrades).
func (s *StatusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := s.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("httpx: the response writer cannot be hijacked")
	}
	if s.status == 0 {
		s.status = http.StatusSwitchingProtocols
	}
	return hj.Hijack()
}

// Flush sends buffered data (server-sent events).
func (s *StatusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *StatusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Log logs each request (not health probes) and recovers from panics.
func Log(base *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			sw := NewStatusWriter(w)
			defer func() {
				if p := recover(); p != nil {
					logging.From(r.Context(), base).Error("panic", "panic", p, "method", r.Method, "path", r.URL.Path)
					if sw.status == 0 {
						JSON(sw, http.StatusInternalServerError, map[string]any{"detail": "internal error", "code": "internal"})
					}
				}
				// The request's logger is built only for a line that is written.
				if IsProbe(r.URL.Path) || !base.Enabled(r.Context(), slog.LevelInfo) {
					return
				}
				logging.From(r.Context(), base).Info("http", "method", r.Method, "path", r.URL.Path, "status", sw.status,
					"duration_ms", time.Since(start).Milliseconds())
			}()
			next.ServeHTTP(sw, r)
		})
	}
}

// AppToken requires the dapr-api-token header to equal token (Dapr's
// APP_API_TOKEN), so only the app's own sidecar may call it. An empty token
// switches the check off. Health probes stay open.
func AppToken(token string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if token == "" {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !IsProbe(r.URL.Path) &&
				subtle.ConstantTimeCompare([]byte(r.Header.Get("dapr-api-token")), []byte(token)) != 1 {
				JSON(w, http.StatusUnauthorized, map[string]any{"detail": "this app only accepts calls from its Dapr sidecar", "code": "unauthenticated"})
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
