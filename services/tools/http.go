package main

import (
	"crypto/subtle"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/httpx"
	"github.com/daca-go/daca/internal/service"
)

// minToken is the shortest bearer token the tool server accepts: with a
// shorter (or empty) one it answers no MCP request at all.
const minToken = 16

type srv struct {
	service.Base
	log *slog.Logger
	// delay and executions are the fault suite's knobs (config).
	delay      time.Duration
	executions string
	token      atomic.Pointer[string]
	mcp        atomic.Pointer[http.Handler]
}

func newServer(log *slog.Logger, appToken string) *srv {
	return &srv{Base: service.Base{Welcome: "DACA tool server: MCP on " + contract.ToolPath, Log: log, AppToken: appToken}, log: log}
}

// ready hands over the token and the notes; MCP requests are answered from
// then on.
func (s *srv) ready(token string, n *notes, sidecar service.Sidecar) {
	if s.delay > 0 || s.executions != "" {
		s.log.Warn("TOOLS_DELAY or TOOLS_EXECUTIONS_FILE is set: for the fault suite only", "delay", s.delay.String(), "executions", s.executions)
	}
	h := http.Handler(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return newMCPServer(n, s.log, s.delay, s.executions) },
		&mcp.StreamableHTTPOptions{Stateless: true, Logger: s.log}))
	s.mcp.Store(&h)
	s.token.Store(&token)
	if len(token) < minToken {
		s.log.Error("the secret " + contract.SecretToolToken + " is missing or shorter than 16 bytes: every MCP request is refused")
	}
	s.SetReady(sidecar, "none")
}

// routes: MCP on contract.ToolPath (the tool token, not the app token: the
// caller is the MCP client of chat-service's sidecar), the service's common
// routes (health, metrics) on the rest.
func (s *srv) routes() http.Handler {
	base := s.Router(func(chi.Router) {})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != contract.ToolPath {
			base.ServeHTTP(w, r)
			return
		}
		h, tok := s.mcp.Load(), s.token.Load()
		if h == nil || tok == nil {
			w.Header().Set("Retry-After", "1")
			httpx.Error(w, r, s.log, apperr.New(apperr.Unavailable, "the tool server is starting"))
			return
		}
		if !authorized(r.Header.Get(contract.ToolTokenHeader), *tok) {
			httpx.Error(w, r, s.log, apperr.New(apperr.Unauthenticated, "a valid bearer token is required"))
			return
		}
		(*h).ServeHTTP(w, r)
	})
}

// authorized reports whether the header holds the expected token (never an
// empty or short one).
func authorized(header, token string) bool {
	return len(token) >= minToken && subtle.ConstantTimeCompare([]byte(header), []byte(token)) == 1
}
