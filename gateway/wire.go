package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/gateway/auth"
	"github.com/daca-go/daca/gateway/backend"
	"github.com/daca-go/daca/gateway/live"
	"github.com/daca-go/daca/gateway/persisted"
	"github.com/daca-go/daca/gateway/ratelimit"
	"github.com/daca-go/daca/gateway/server"
	"github.com/daca-go/daca/gateway/wstransport"
	"github.com/daca-go/daca/graph"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/daprc"
	"github.com/daca-go/daca/internal/service"
)

// gcPercent is the gateway's GOGC unless the environment sets one. The
// gateway allocates ~30 KB per request and keeps little (a few MiB, plus a few
// KiB per open subscription), so with Go's default of 100 it collects many
// times a second under load; at 400 it spends about 15% less CPU per request
// for a larger heap.
const gcPercent = 400

// recentEvents is how many conversation events each replica remembers for
// subscribers that resume (conversationUpdated with after): those published
// but not yet in the memory service's history when the client comes back.
const recentEvents = 1000

// run is the gateway process: it connects to its sidecar, assembles the
// resolver from its ports (backend client, guard, turn limit, the live
// hub's feeds, turn watcher, websocket waker) and
// serves the HTTP surface until ctx ends.
func run(ctx context.Context, cfg config) error {
	log, stopTracing, err := service.Observe(ctx, contract.GatewayApp, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	defer stopTracing()
	tuneGC(gcPercent, log)
	ln, err := service.Listen(cfg.Addr())
	if err != nil {
		return err
	}
	initCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	sidecar, err := daprc.Connect(initCtx, log)
	if err != nil {
		return err
	}
	defer sidecar.Close()

	var invocation backend.Sidecar = daprc.NewHTTP(cfg.daprHTTPPort, cfg.daprToken)
	if cfg.invocation == "grpc" {
		invocation = backend.GRPC{Client: sidecar}
	}
	b := &backend.Client{Sidecar: invocation, Timeout: cfg.callTimeout, ChatTimeout: cfg.chatTimeout}
	guard, err := newGuard(initCtx, cfg, sidecar, log)
	if err != nil {
		return err
	}
	hub := live.New(live.Config{Queue: cfg.subscriberQueue, Recent: recentEvents, PubSub: cfg.pubsub}, server.DropSlowSubscriber(cfg.subscriberQueue, log), log)
	go hub.Run(ctx, 10*time.Second)
	turns, fallbacks := newTurnLimit(cfg, sidecar, log)
	res := &graph.Resolver{
		Backend:       b,
		Conversations: hub.Conversations,
		Memories:      hub.Memories,
		Approvals:     hub.Approvals,
		Replies:       hub.Replies,
		Log:           log,
		Callers:       guard,
		Turns:         turns,
		Runs:          graph.NewRunWatch(b.ReadChatRun, cfg.runPoll, log),
		Waker:         wstransport.Waker,
	}
	cfg.http.Guard = guard
	cfg.http.Live = hub
	cfg.http.TurnLimitFallbacks = fallbacks
	if cfg.apqStore != "" { // every replica knows the queries any of them was sent
		cfg.http.PersistedQueries = persisted.New(sidecar, cfg.apqStore, cfg.apqTTL, 1000, log)
	}
	cfg.http.Ready = func(ctx context.Context) error { return ready(b.Health(ctx)) }
	srv := server.New(cfg.http, res, log)

	service.ServePprof(cfg.PprofAddr, log)
	log.Info("ready", "auth_mode", cfg.authMode, "trusted_documents", cfg.http.Trusted, "trusted_document_count", cfg.http.TrustedDocuments.Len(), "backend_invocation", cfg.invocation, "graphql", fmt.Sprintf("http://%s/graphql", ln.Addr()))
	return service.Serve(ctx, ln, srv.Handler(), 10*time.Second, log, srv.CloseWebsockets)
}

// newGuard returns the authentication of AUTH_MODE: none, RS256 tokens with
// keys from JWT_JWKS_URL, or HS256 tokens signed with the secret store's
// gateway-jwt-secret (at least 32 bytes).
func newGuard(ctx context.Context, cfg config, sidecar dapr.Client, log *slog.Logger) (*auth.Guard, error) {
	guard := &auth.Guard{Mode: cfg.authMode}
	switch {
	case cfg.authMode == "none":
		log.Warn("AUTH_MODE=none: clients are not authenticated; userId is taken from the arguments")
	case cfg.jwksURL != "":
		guard.Verifier = &auth.JWKS{URL: cfg.jwksURL, Opts: cfg.jwtOpts}
		log.Info("AUTH_MODE=jwt: RS256 tokens, keys from the JWKS URL", "jwks_url", cfg.jwksURL)
	default:
		m, err := sidecar.GetSecret(ctx, contract.SecretStore, contract.SecretJWT, nil)
		if err != nil {
			return nil, fmt.Errorf("AUTH_MODE=jwt: reading %s from the secret store: %w", contract.SecretJWT, err)
		}
		v, err := auth.NewHS256(m[contract.SecretJWT], cfg.jwtOpts)
		if err != nil {
			return nil, err
		}
		guard.Verifier = v
		log.Info("AUTH_MODE=jwt: HS256 tokens, signing secret from the Dapr secret store")
	}
	return guard, nil
}

// newTurnLimit returns the per-user chat-turn limit: one limit across every
// replica, kept in the gateway's state store (RATE_LIMIT_STORE), or this
// replica's own when RATE_LIMIT_STORE is empty; and, for the shared limit,
// the count of turns it counted locally because the store failed.
func newTurnLimit(cfg config, sidecar dapr.Client, log *slog.Logger) (graph.TurnLimiter, func() int64) {
	if cfg.rateStore == "" {
		return ratelimit.New(cfg.ratePerMinute, cfg.rateBurst), nil
	}
	shared := ratelimit.NewShared(ratelimit.DaprStore{Sidecar: sidecar, Store: cfg.rateStore, Prefix: "turns|"}, cfg.ratePerMinute, cfg.rateBurst, log)
	return shared, shared.FellBack
}

// ready is /readyz: the sidecar answers and no backend is unavailable.
func ready(h graph.BackendHealth) error {
	if h.Sidecar != "ok" {
		return errors.New("sidecar unavailable")
	}
	for app, st := range h.Apps {
		if st == "unavailable" {
			return fmt.Errorf("%s unavailable", app)
		}
	}
	return nil
}
