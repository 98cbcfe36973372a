// Package server is the gateway's HTTP surface: GraphQL over HTTP (POST,
// GET for queries) and websocket (graphql-transport-ws and legacy
// graphql-ws) on /graphql, the GraphiQL playground on /, health on /healthz
// and /readyz, and the pub/sub routes its Dapr sidecar delivers events to.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/coder/websocket"
	"github.com/go-chi/chi/v5"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/daca-go/daca/gateway/auth"
	"github.com/daca-go/daca/gateway/backend"
	"github.com/daca-go/daca/gateway/playground"
	"github.com/daca-go/daca/graph"
	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/fanout"
	"github.com/daca-go/daca/internal/httpx"
	"github.com/daca-go/daca/internal/logging"
	"github.com/daca-go/daca/internal/telemetry"
)

// Config of the HTTP surface.
type Config struct {
	MaxDepth        int           // GRAPHQL_MAX_DEPTH, default 12
	MaxComplexity   int           // GRAPHQL_MAX_COMPLEXITY, default 500
	MaxBody         int64         // bytes, default 1 MiB
	Introspection   bool          // GRAPHQL_INTROSPECTION, default true
	AllowedOrigins  []string      // CORS and websocket origins besides the gateway's own host
	KeepAlive       time.Duration // websocket keepalive, default 10s
	InitTimeout     time.Duration // websocket connection_init timeout, default 10s
	SubscriberQueue int           // events buffered per subscriber before it is dropped, default 64
	LoaderWait      time.Duration // how long a dataloader gathers keys, default graph.DefaultLoaderWait
	RunPoll         time.Duration // how often a followed chat turn is read (chatRun subscription), default 250ms
	AppToken        string        // APP_API_TOKEN: required on the pub/sub routes
	PubSub          string        // pub/sub component the gateway subscribes with, default gateway-pubsub
	AuthMode        string
	Suggestions     bool              // "did you mean" in validation errors (GRAPHQL_SUGGESTIONS)
	Guard           *auth.Guard       // authentication and authorisation
	Turns           graph.TurnLimiter // chat turns per user; nil: no limit
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
	if c.InitTimeout == 0 {
		c.InitTimeout = 10 * time.Second
	}
	if c.SubscriberQueue == 0 {
		c.SubscriberQueue = 64
	}
	if c.PubSub == "" {
		c.PubSub = "gateway-pubsub"
	}
	if c.AuthMode == "" {
		c.AuthMode = "none"
	}
}

// Server holds the gateway's handlers and event brokers.
type Server struct {
	cfg           Config
	log           *slog.Logger
	backend       backend.Backend
	started       time.Time
	Conversations *fanout.Broker[*model.ConversationEvent]
	Memories      *fanout.Broker[*model.MemoryEvent]
	ready         func(context.Context) error
	metrics       *metrics
	sockets       *sockets
	runs          *graph.RunWatch
}

// New returns the server. ready reports whether the sidecar and the
// backends answer (for /readyz).
func New(cfg Config, b backend.Backend, log *slog.Logger) *Server {
	cfg.defaults()
	s := &Server{cfg: cfg, log: log, backend: b, started: time.Now(), sockets: newSockets()}
	// A subscriber whose buffer is full is behind by SubscriberQueue events:
	// its socket is closed with 1013 and a reason (the client may reconnect
	// and re-query), so it sees why rather than a silent complete.
	reason := fmt.Sprintf("Subscriber too slow: %d events unread; reconnect", cfg.SubscriberQueue)
	drop := func(ctx context.Context) {
		closed := closeSocket(ctx, closeTryAgainLater, reason)
		logging.From(ctx, log).Warn("subscriber dropped: its buffer was full (a slow or stuck client)",
			"queue", cfg.SubscriberQueue, "socket_closed", closed)
	}
	s.Conversations = fanout.New[*model.ConversationEvent](cfg.SubscriberQueue, drop)
	s.Memories = fanout.New[*model.MemoryEvent](cfg.SubscriberQueue, drop)
	s.runs = graph.NewRunWatch(b.ChatRun, cfg.RunPoll, log)
	s.metrics = newMetrics(s)
	return s
}

// GraphQL returns the GraphQL handler (all transports).
func (s *Server) GraphQL() http.Handler {
	res := &graph.Resolver{Backend: s.backend, Conversations: s.Conversations, Memories: s.Memories, Log: s.log,
		AuthMode: s.cfg.AuthMode, Guard: s.cfg.Guard, Turns: s.cfg.Turns, Runs: s.runs}
	srv := handler.New(graph.NewExecutableSchema(graph.Config{Resolvers: res}))
	origins := s.cfg.AllowedOrigins
	srv.AddTransport(transport.Websocket{
		Implementation: protocolGuard{initTimeout: s.cfg.InitTimeout, open: s.sockets, inner: transport.CoderWebsocketImplementation{AcceptOptions: websocket.AcceptOptions{
			Subprotocols:   []string{"graphql-transport-ws", "graphql-ws"},
			OriginPatterns: originPatterns(origins),
		}}},
		KeepAlivePingInterval: s.cfg.KeepAlive,                   // legacy graphql-ws "ka"
		PingPongInterval:      s.cfg.KeepAlive,                   // graphql-transport-ws ping/pong; a dead peer is closed
		InitTimeout:           s.cfg.InitTimeout + 2*time.Second, // protocolGuard answers first, with 4408
		InitFunc:              s.wsInit,
	})
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})
	srv.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	srv.SetDisableSuggestion(!s.cfg.Suggestions)
	if s.cfg.Introspection {
		srv.Use(extension.Introspection{})
	}
	srv.Use(extension.AutomaticPersistedQuery{Cache: lru.New[string](256)})
	srv.Use(extension.FixedComplexityLimit(s.cfg.MaxComplexity))
	srv.Use(depthLimit{max: s.cfg.MaxDepth})
	srv.Use(websocketSubscriptions{})
	srv.Use(s.metrics)
	srv.AroundOperations(func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		return next(graph.WithLoaders(ctx, s.backend, s.cfg.LoaderWait)) // per-operation dataloaders
	})
	srv.SetErrorPresenter(s.presentError)
	srv.SetRecoverFunc(func(ctx context.Context, p any) error {
		logging.From(ctx, s.log).Error("panic in a resolver", "panic", fmt.Sprint(p))
		return apperr.New(apperr.Internal, "internal error")
	})
	return srv
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

// wsInit authenticates a websocket from its connection_init payload
// (Authorization, authorization or token) unless the upgrade request already
// carried a valid bearer token. A bad or missing token closes the socket with
// 4403 Forbidden.
func (s *Server) wsInit(ctx context.Context, p transport.InitPayload) (context.Context, *transport.InitPayload, error) {
	if !s.cfg.Guard.Enabled() {
		return ctx, nil, nil
	}
	if _, ok := auth.From(ctx); ok {
		return ctx, nil, nil
	}
	raw := auth.BearerToken(p.Authorization())
	if raw == "" {
		raw = p.GetString("token")
	}
	forbidden := func(err error) (context.Context, *transport.InitPayload, error) {
		logging.From(ctx, s.log).Info("websocket refused", "err", err)
		ctx = transport.WithWebsocketCloseCode(ctx, closeForbidden)
		ctx = transport.AppendCloseReason(ctx, "Forbidden")
		return ctx, nil, errors.New("Forbidden")
	}
	if raw == "" {
		return forbidden(errors.New("no token in connection_init"))
	}
	actx, err := s.cfg.Guard.Authenticate(ctx, raw)
	if err != nil {
		return forbidden(err)
	}
	return actx, nil, nil
}

// bodyError rewrites gqlgen's answers to a request body it cannot read or
// that is not one JSON operation, which quote the whole body back
// ("... body:<the body>"): it says what is wrong, without the body.
func bodyError(msg string) (string, bool) {
	const decode, read = "json request body could not be decoded: ", "could not read request body: "
	switch {
	case !strings.HasPrefix(msg, decode) && !strings.HasPrefix(msg, read):
		return "", false
	case strings.Contains(msg, "request body too large"):
		return "the request body is larger than the limit", true
	case strings.Contains(msg, "cannot unmarshal array"):
		return "batched operations (a JSON array) are not supported: send one operation per request", true
	case strings.HasPrefix(msg, read):
		return "the request body could not be read", true
	}
	detail, _, _ := strings.Cut(strings.TrimPrefix(msg, decode), " body:")
	return "the request body is not a JSON object with a query: " + detail, true
}

// presentError maps an error to a GraphQL error with extensions.code, once.
// Client-safe messages only; internal details go to the log.
func (s *Server) presentError(ctx context.Context, e error) *gqlerror.Error {
	gerr := graphql.DefaultErrorPresenter(ctx, e)
	var ae *apperr.Error
	if !errors.As(e, &ae) {
		var ge *gqlerror.Error
		if errors.As(e, &ge) && ge.Err == nil {
			if msg, ok := bodyError(gerr.Message); ok {
				gerr.Message = msg
				gerr.Extensions = map[string]any{"code": "BAD_REQUEST"}
			}
			return gerr // parse and validation errors: already client-safe
		}
		logging.From(ctx, s.log).Error("graphql: unexpected error", "err", e)
		gerr.Message = "internal error"
		gerr.Extensions = map[string]any{"code": "INTERNAL"}
		return gerr
	}
	code := GraphQLCode(ae.Code)
	gerr.Message = ae.Message
	gerr.Extensions = map[string]any{"code": code}
	if ae.RetryAfter > 0 {
		gerr.Extensions["retryAfter"] = int((ae.RetryAfter + time.Second - 1) / time.Second)
	}
	log := logging.From(ctx, s.log)
	switch code {
	case "INTERNAL", "UNAVAILABLE":
		log.Error("graphql: request failed", "code", code, "err", e)
	default:
		log.Info("graphql: request refused", "code", code, "err", e)
	}
	return gerr
}

// GraphQLCode maps an apperr code to extensions.code.
func GraphQLCode(c apperr.Code) string {
	switch c {
	case apperr.Invalid, apperr.TooLarge:
		return "BAD_USER_INPUT"
	case apperr.NotFound:
		return "NOT_FOUND"
	case apperr.Unauthenticated:
		return "UNAUTHENTICATED"
	case apperr.Forbidden:
		return "FORBIDDEN"
	case apperr.RateLimited:
		return "RATE_LIMITED"
	case apperr.Unavailable, apperr.Timeout, apperr.Conflict:
		return "UNAVAILABLE"
	default:
		return "INTERNAL"
	}
}

func originPatterns(origins []string) []string {
	var out []string
	for _, o := range origins {
		o = strings.TrimPrefix(strings.TrimPrefix(o, "https://"), "http://")
		if o != "" {
			out = append(out, o)
		}
	}
	return out
}

// Routes returns the whole HTTP surface.
func (s *Server) Routes(ready func(context.Context) error) http.Handler {
	s.ready = ready
	r := chi.NewRouter()
	r.Use(telemetry.Middleware(httpx.IsProbe), httpx.RequestID(s.log), httpx.Log(s.log))
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		httpx.JSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := s.ready(ctx); err != nil {
			logging.From(r.Context(), s.log).Warn("not ready", "err", err)
			httpx.JSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "detail": apperr.MessageOf(err)})
			return
		}
		httpx.JSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Handle("/metrics", s.metrics.handler())
	r.Handle("/", playground.Page("DACA Gateway", "/graphql"))
	r.Handle(playground.AssetsPath+"*", playground.Assets())
	gql := s.GraphQL()
	r.Handle("/graphql", s.limits(withConnSlot(gql)))
	r.Group(func(r chi.Router) {
		r.Use(httpx.AppToken(s.cfg.AppToken))
		r.Get("/dapr/subscribe", s.subscriptions)
		r.Post("/events/conversations", s.onConversation)
		r.Post("/events/memory-updates", s.onMemoryUpdate)
	})
	return r
}

// limits applies the body limit, CORS, and the CSRF rule: a request a
// browser may send cross-site without a preflight (form or text/plain
// content) is refused unless it carries a header that forces a preflight.
func (s *Server) limits(next http.Handler) http.Handler {
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

// tooLargeWriter answers 413 instead of 200 when the body went over its
// limit (gqlgen answers a body it cannot read with 200 and an error).
type tooLargeWriter struct {
	http.ResponseWriter
	body  *limitedBody
	wrote bool
}

func (w *tooLargeWriter) WriteHeader(code int) {
	if !w.wrote && w.body.tooLarge && code == http.StatusOK {
		code = http.StatusRequestEntityTooLarge
	}
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *tooLargeWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func writeGraphQLError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"message": msg, "extensions": map[string]any{"code": code}}}})
}

// subscriptions tells the sidecar which topics to deliver. The component
// gateway-pubsub gives every gateway replica its own consumer group, so each
// replica receives every event.
func (s *Server) subscriptions(w http.ResponseWriter, r *http.Request) {
	subs := []map[string]any{}
	for _, t := range []string{"conversations", "memory-updates"} {
		subs = append(subs, map[string]any{"pubsubname": s.cfg.PubSub, "topic": t, "routes": map[string]string{"default": "/events/" + t}})
	}
	httpx.JSON(w, http.StatusOK, subs)
}

type cloudEvent struct {
	ID   string          `json:"id"`
	Time time.Time       `json:"time"`
	Data json.RawMessage `json:"data"`
}

// decode reads a CloudEvent; stale is true for events from before this
// gateway started (a new consumer group reads the stream from its start).
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) (ce cloudEvent, stale bool, ok bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(b, &ce)
	}
	if err == nil {
		data := []byte(ce.Data)
		var str string
		if json.Unmarshal(data, &str) == nil {
			data = []byte(str)
		}
		err = json.Unmarshal(data, v)
	}
	if err != nil {
		logging.From(r.Context(), s.log).Warn("event dropped: malformed", "err", err)
		httpx.JSON(w, http.StatusOK, map[string]string{"status": "DROP"})
		return ce, false, false
	}
	if !ce.Time.IsZero() && ce.Time.Before(s.started.Add(-5*time.Second)) {
		httpx.JSON(w, http.StatusOK, map[string]string{"status": "SUCCESS"})
		return ce, true, true
	}
	return ce, false, true
}

func (s *Server) onConversation(w http.ResponseWriter, r *http.Request) {
	var ev struct {
		UserID         string `json:"user_id"`
		SessionID      string `json:"session_id"`
		EventType      string `json:"event_type"`
		UserMessage    string `json:"user_message"`
		AssistantReply string `json:"assistant_reply"`
	}
	ce, stale, ok := s.decode(w, r, &ev)
	if !ok || stale {
		return
	}
	if ev.EventType == "ConversationUpdated" && ev.UserID != "" && ev.SessionID != "" {
		n := s.Conversations.Publish(&model.ConversationEvent{EventID: ce.ID, UserID: ev.UserID, SessionID: ev.SessionID,
			UserMessage: ev.UserMessage, AssistantReply: ev.AssistantReply})
		logging.From(r.Context(), s.log).Debug("conversation event fanned out", "cloudevent_id", ce.ID, "subscribers", n)
	}
	httpx.JSON(w, http.StatusOK, map[string]string{"status": "SUCCESS"})
}

func (s *Server) onMemoryUpdate(w http.ResponseWriter, r *http.Request) {
	var ev struct {
		UserID      string `json:"user_id"`
		SessionID   string `json:"session_id"`
		UserSummary string `json:"user_summary"`
	}
	ce, stale, ok := s.decode(w, r, &ev)
	if !ok || stale {
		return
	}
	if ev.UserID != "" {
		n := s.Memories.Publish(&model.MemoryEvent{UserID: ev.UserID, SessionID: ev.SessionID, UserSummary: ev.UserSummary})
		logging.From(r.Context(), s.log).Debug("memory event fanned out", "cloudevent_id", ce.ID, "subscribers", n)
	}
	httpx.JSON(w, http.StatusOK, map[string]string{"status": "SUCCESS"})
}
