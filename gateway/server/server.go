// Package server is the gateway's HTTP surface around an assembled
// resolver (graph.Resolver): GraphQL over HTTP (POST, GET for queries) and
// websocket (graphql-transport-ws and legacy graphql-ws) on /graphql, the
// GraphiQL playground on / and the chat page on /chat (gateway/web), health
// on /healthz and /readyz, metrics on /metrics, and the pub/sub intake
// (gateway/live) its Dapr sidecar delivers events to, and AG-UI on /agui
// (gateway/agui).
//
// Files by job: graphql.go builds the GraphQL handler and its transports,
// errors.go presents errors, httpguard.go holds the HTTP guards of /graphql
// (CORS, CSRF, body limit, bearer token), wsproto.go the websocket protocol
// guard, observe.go metrics and traces,
// depth.go and subscriptions.go two operation rules.
package server

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/go-chi/chi/v5"

	"github.com/daca-go/daca/gateway/agui"
	"github.com/daca-go/daca/gateway/auth"
	"github.com/daca-go/daca/gateway/trusted"
	"github.com/daca-go/daca/gateway/web"
	"github.com/daca-go/daca/graph"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/httpx"
	"github.com/daca-go/daca/internal/logging"
	"github.com/daca-go/daca/internal/telemetry"
)

// Config of the HTTP surface.
type Config struct {
	MaxDepth       int           // GRAPHQL_MAX_DEPTH, default 12
	MaxDeferred    int           // GRAPHQL_MAX_DEFERRED: @defer fragments per operation, default 8; negative: @defer refused
	MaxComplexity  int           // GRAPHQL_MAX_COMPLEXITY, default 500
	MaxBody        int64         // bytes, default 1 MiB
	Introspection  bool          // GRAPHQL_INTROSPECTION, default true
	AllowedOrigins []string      // CORS and websocket origins besides the gateway's own host
	KeepAlive      time.Duration // websocket keepalive, default 10s
	// MultipartHeartbeat is how often a quiet multipart subscription
	// sends its heartbeat ({}), default 5s (Apollo's).
	MultipartHeartbeat time.Duration
	InitTimeout        time.Duration // websocket connection_init timeout, default 10s
	LoaderWait         time.Duration // how long a dataloader gathers keys, default graph.DefaultLoaderWait
	AppToken           string        // APP_API_TOKEN: required on the pub/sub routes
	Suggestions        bool          // "did you mean" in validation errors (GRAPHQL_SUGGESTIONS)
	Guard              *auth.Guard   // authentication of bearer tokens and websocket connection_init
	// Trusted is GRAPHQL_TRUSTED_DOCUMENTS ("": off) and TrustedDocuments
	// its manifest (the chat page's operations are added to it).
	Trusted          trusted.Mode
	TrustedDocuments *trusted.Manifest
	// PersistedQueries are the automatic persisted queries (APQ) by hash;
	// nil keeps them in this replica's memory.
	PersistedQueries graphql.Cache[string]
	Ready            func(context.Context) error // /readyz: the sidecar and the backends answer
	// Live is the pub/sub intake, mounted behind the app token, and its
	// figures for /metrics (gateway/live.Hub); nil: none.
	Live Live
	// TurnLimitFallbacks counts the turns the shared turn limit counted
	// locally because its state store failed; nil: not reported.
	TurnLimitFallbacks func() int64
}

// Live is the pub/sub side of the gateway as the server sees it
// (gateway/live.Hub).
type Live interface {
	// Mount adds the routes the sidecar delivers events to.
	Mount(r chi.Router)
	// Topic reports a topic's open subscriptions, the events delivered to
	// subscribers and the slow subscribers dropped.
	Topic(topic string) (subscribers int, delivered, dropped uint64)
	// StreamedTurns is how many turns' replies are kept for chatStream.
	StreamedTurns() int
}

func (c *Config) defaults() {
	if c.MaxDepth == 0 {
		c.MaxDepth = 12
	}
	if c.MaxComplexity == 0 {
		c.MaxComplexity = 500
	}
	if c.MaxBody == 0 {
		c.MaxBody = 1 << 20
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 10 * time.Second
	}
	if c.Trusted == "" {
		c.Trusted = trusted.Off
	}
	if c.TrustedDocuments == nil {
		c.TrustedDocuments = trusted.New()
	}
	if c.MaxDeferred == 0 {
		c.MaxDeferred = 8
	}
	if c.MultipartHeartbeat == 0 {
		c.MultipartHeartbeat = 5 * time.Second
	}
	if c.InitTimeout == 0 {
		c.InitTimeout = 10 * time.Second
	}
	if c.PersistedQueries == nil {
		c.PersistedQueries = lru.New[string](256)
	}
	if c.Ready == nil {
		c.Ready = func(context.Context) error { return nil }
	}
}

// Server is the gateway's HTTP surface.
type Server struct {
	cfg     Config
	log     *slog.Logger
	res     *graph.Resolver
	obs     *observer
	sockets *sockets
}

// New returns the HTTP surface of the resolver res.
func New(cfg Config, res *graph.Resolver, log *slog.Logger) *Server {
	cfg.defaults()
	for _, op := range web.ChatOperations() { // the chat page works when only trusted documents run
		cfg.TrustedDocuments.Add(op)
	}
	s := &Server{cfg: cfg, log: log, res: res, sockets: newSockets()}
	s.obs = newObserver(res.Runs, cfg.Live, cfg.TurnLimitFallbacks)
	return s
}

// Handler returns the whole HTTP surface.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(telemetry.Middleware(httpx.IsProbe), httpx.RequestID(s.log), httpx.Log(s.log))
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		httpx.JSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", s.readyz)
	r.Handle("/metrics", s.obs.handler())
	web.Mount(r, "DACA Gateway", "/graphql", s.cfg.Trusted != trusted.Require)
	gql := s.graphQL()
	if s.cfg.Trusted != trusted.Off {
		gql = documentIDs(gql)
	}
	r.Handle("/graphql", s.guardHTTP(withConnSlot(gql)))
	// AG-UI: the same resolvers, behind the same guards (its JSON-only
	// body needs a CORS preflight, so no CSRF check is needed).
	ag := s.cors(s.bodyLimit(s.bearerAuth(&agui.Handler{Turns: agui.Resolvers(s.res), Callers: s.res.Callers, Log: s.log})))
	r.Post("/agui", ag.ServeHTTP)
	r.Options("/agui", s.cors(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })).ServeHTTP)
	if s.cfg.Live != nil {
		r.Group(func(r chi.Router) {
			r.Use(httpx.AppToken(s.cfg.AppToken))
			s.cfg.Live.Mount(r)
		})
	}
	return r
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.cfg.Ready(ctx); err != nil {
		logging.From(r.Context(), s.log).Warn("not ready", "err", err)
		httpx.JSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "detail": apperr.MessageOf(err)})
		return
	}
	httpx.JSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// CloseWebsockets closes every open websocket with 1001 Going Away and a
// reason, so that clients reconnect (to another replica) at once instead of
// finding a dead connection, and waits until they are closed or ctx ends.
// The HTTP server's shutdown leaves hijacked connections such as websockets
// alone: the process calls this beside it.
func (s *Server) CloseWebsockets(ctx context.Context) {
	n, all := s.sockets.closeAll(ctx, closeGoingAway, "Going away: the gateway is shutting down; reconnect")
	switch {
	case n == 0:
	case all:
		s.log.Info("shutting down: websockets closed", "count", n)
	default:
		s.log.Warn("shutting down: websockets still closing when the grace period ended", "count", n)
	}
}
