package server

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/daca-go/daca/gateway/auth"
	"github.com/daca-go/daca/gateway/trusted"
	"github.com/daca-go/daca/gateway/wstransport"
	"github.com/daca-go/daca/graph"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/logging"
)

// graphQL returns the GraphQL handler: every transport, the operation rules
// (complexity, depth, deferred fragments, subscriptions only over a
// streaming transport), per-operation
// dataloaders, metrics and traces, and error presentation.
func (s *Server) graphQL() http.Handler {
	srv := handler.New(graph.NewExecutableSchema(graph.Config{Resolvers: s.res}))
	srv.AddTransport(wstransport.Websocket{
		Implementation: protocolGuard{initTimeout: s.cfg.InitTimeout, open: s.sockets, inner: transport.CoderWebsocketImplementation{AcceptOptions: websocket.AcceptOptions{
			Subprotocols:   []string{"graphql-transport-ws", "graphql-ws"},
			OriginPatterns: originPatterns(s.cfg.AllowedOrigins),
		}}},
		KeepAlivePingInterval: s.cfg.KeepAlive,                   // legacy graphql-ws "ka"
		PingPongInterval:      s.cfg.KeepAlive,                   // graphql-transport-ws ping/pong; a dead peer is closed
		InitTimeout:           s.cfg.InitTimeout + 2*time.Second, // protocolGuard answers first, with 4408
		InitFunc:              s.wsInit,
	})
	// GraphQL over Server-Sent Events (graphql-sse, distinct connections
	// mode) where websockets are blocked: a subscription sent as a POST with
	// Accept: text/event-stream, behind the same HTTP guards.
	srv.AddTransport(checkedBody{transport.SSE{KeepAlivePingInterval: s.cfg.KeepAlive}})
	// Apollo's subscriptions over multipart HTTP (Accept: multipart/mixed
	// with subscriptionSpec), before gqlgen's multipart/mixed for @defer
	// (deferSpec): the first transport that supports a request serves it.
	srv.AddTransport(multipartSubscriptions{heartbeat: s.cfg.MultipartHeartbeat, log: s.log})
	srv.AddTransport(checkedBody{transport.MultipartMixed{Boundary: "-", DeliveryTimeout: 5 * time.Millisecond}})
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})
	srv.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	srv.SetDisableSuggestion(!s.cfg.Suggestions)
	if s.cfg.Introspection {
		srv.Use(extension.Introspection{})
	}
	if s.cfg.Trusted != trusted.Off { // before APQ: a listed hash gets its text here
		srv.Use(trustedDocuments{mode: s.cfg.Trusted, m: s.cfg.TrustedDocuments, log: s.log})
	}
	if s.cfg.Trusted != trusted.Require { // APQ would let any client add a document
		srv.Use(extension.AutomaticPersistedQuery{Cache: s.cfg.PersistedQueries})
	}
	srv.Use(&complexityLimit{max: s.cfg.MaxComplexity})
	srv.Use(depthLimit{max: s.cfg.MaxDepth})
	srv.Use(deferLimit{max: s.cfg.MaxDeferred})
	srv.Use(websocketSubscriptions{})
	srv.Use(s.obs)
	srv.AroundOperations(func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		return next(graph.WithLoaders(ctx, s.res.Backend, s.cfg.LoaderWait)) // per-operation dataloaders
	})
	srv.SetErrorPresenter(s.presentError)
	srv.SetRecoverFunc(func(ctx context.Context, p any) error {
		logging.From(ctx, s.log).Error("panic in a resolver", "panic", fmt.Sprint(p))
		return apperr.New(apperr.Internal, "internal error")
	})
	return srv
}

// DropSlowSubscriber is the brokers' drop hook (fanout.New): a subscriber
// whose buffer of queue events is full has its socket closed with 1013 and
// a reason (the client may reconnect and re-query), so it sees why rather
// than a silent complete.
func DropSlowSubscriber(queue int, log *slog.Logger) func(context.Context) {
	reason := fmt.Sprintf("Subscriber too slow: %d events unread; reconnect", queue)
	return func(ctx context.Context) {
		closed := closeSocket(ctx, closeTryAgainLater, reason)
		logging.From(ctx, log).Warn("subscriber dropped: its buffer was full (a slow or stuck client)",
			"queue", queue, "socket_closed", closed)
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
		ctx = wstransport.WithWebsocketCloseCode(ctx, closeForbidden)
		ctx = wstransport.AppendCloseReason(ctx, "Forbidden")
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
