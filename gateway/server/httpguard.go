package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/daca-go/daca/gateway/auth"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/logging"
)

// guardHTTP wraps /graphql in its HTTP guards, outermost first: CORS, the
// CSRF rule, the status of a mutation over GET, the body limit, then the
// bearer token.
func (s *Server) guardHTTP(next http.Handler) http.Handler {
	return s.cors(csrf(queryOnlyGET(s.bodyLimit(s.bearerAuth(next)))))
}

// queryOnlyGET answers an operation other than a query sent over GET with
// 405 Method Not Allowed and Allow: POST, as the GraphQL-over-HTTP spec
// asks (gqlgen refuses it, unexecuted, with 406).
func queryOnlyGET(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&getWriter{ResponseWriter: w}, r)
	})
}

type getWriter struct{ http.ResponseWriter }

func (w *getWriter) WriteHeader(code int) {
	if code == http.StatusNotAcceptable {
		w.Header().Set("Allow", http.MethodPost)
		code = http.StatusMethodNotAllowed
	}
	w.ResponseWriter.WriteHeader(code)
}

// cors answers the allowed origins (AllowedOrigins) with CORS headers.
func (s *Server) cors(next http.Handler) http.Handler {
	allowed := map[string]bool{}
	for _, o := range s.cfg.AllowedOrigins {
		allowed[strings.TrimRight(o, "/")] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o := r.Header.Get("Origin"); o != "" && allowed[o] {
			w.Header().Set("Access-Control-Allow-Origin", o)
			w.Header().Set("Vary", "Origin")
			w.Header().Set("Access-Control-Allow-Headers", "Content-Type, Authorization, X-Request-Id, Apollo-Require-Preflight")
			w.Header().Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			w.Header().Set("Access-Control-Max-Age", "600")
		}
		next.ServeHTTP(w, r)
	})
}

// csrf refuses a POST a browser may send cross-site without a preflight
// (form or text/plain content) unless it carries a header that forces a
// preflight (Apollo-Require-Preflight, X-Apollo-Operation-Name).
func csrf(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			ct := strings.ToLower(strings.TrimSpace(strings.Split(r.Header.Get("Content-Type"), ";")[0]))
			switch ct {
			case "application/x-www-form-urlencoded", "multipart/form-data", "text/plain":
				if r.Header.Get("Apollo-Require-Preflight") == "" && r.Header.Get("X-Apollo-Operation-Name") == "" {
					writeGraphQLError(w, http.StatusBadRequest, "BAD_REQUEST",
						"this content type needs a header that forces a CORS preflight (Apollo-Require-Preflight); send application/json")
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// bodyLimit refuses a body over MaxBody with 413: at once when its length
// is declared, while gqlgen reads it when it is chunked.
func (s *Server) bodyLimit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s.cfg.MaxBody {
			writeGraphQLError(w, http.StatusRequestEntityTooLarge, "BAD_REQUEST",
				fmt.Sprintf("the request body is larger than the limit (%d bytes)", s.cfg.MaxBody))
			return
		}
		if r.Method == http.MethodPost && r.ContentLength < 0 { // chunked: the limit shows while gqlgen reads
			lb := &limitedBody{ReadCloser: http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)}
			r.Body, w = lb, &tooLargeWriter{ResponseWriter: w, body: lb}
		} else {
			r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
		}
		next.ServeHTTP(w, r)
	})
}

// bearerAuth authenticates an "Authorization: Bearer" token (AUTH_MODE=jwt);
// a bad token is refused with 401. Without a token the request goes on
// unauthenticated (the resolvers decide; a websocket may still send its
// token in connection_init).
func (s *Server) bearerAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if raw := auth.BearerToken(r.Header.Get("Authorization")); raw != "" && s.cfg.Guard.Enabled() {
			ctx, err := s.cfg.Guard.Authenticate(r.Context(), raw)
			if err != nil {
				logging.From(r.Context(), s.log).Info("bearer token refused", "err", err)
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
				writeGraphQLError(w, http.StatusUnauthorized, "UNAUTHENTICATED", apperr.MessageOf(err))
				return
			}
			r = r.WithContext(ctx)
		}
		next.ServeHTTP(w, r)
	})
}

// limitedBody notes that a body went over its limit.
type limitedBody struct {
	io.ReadCloser
	tooLarge bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		b.tooLarge = true
	}
	return n, err
}

// tooLargeWriter answers 413 instead of 200 or 400 when the body went over
// its limit (gqlgen answers a body it cannot read with 200 and an error,
// the multipart subscription transport with 400).
type tooLargeWriter struct {
	http.ResponseWriter
	body  *limitedBody
	wrote bool
}

func (w *tooLargeWriter) WriteHeader(code int) {
	if !w.wrote && w.body.tooLarge && (code == http.StatusOK || code == http.StatusBadRequest) {
		code = http.StatusRequestEntityTooLarge
	}
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

// Flush sends buffered data (Server-Sent Events).
func (w *tooLargeWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *tooLargeWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}
