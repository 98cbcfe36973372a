// Command gateway is the DACA GraphQL gateway (Dapr app id gateway, port
// 8080): chat mutations, memory queries and live subscriptions, reaching the
// backends only through its own Dapr sidecar.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	_ "net/http/pprof"
	"os"
	"strings"
	"time"

	"github.com/daca-go/daca/gateway/auth"
	"github.com/daca-go/daca/gateway/backend"
	"github.com/daca-go/daca/gateway/server"
	"github.com/daca-go/daca/internal/daprc"
	"github.com/daca-go/daca/internal/env"
	"github.com/daca-go/daca/internal/gctune"
	"github.com/daca-go/daca/internal/ratelimit"
	internalserver "github.com/daca-go/daca/internal/server"
	"github.com/daca-go/daca/internal/service"
)

type config struct {
	service.Common
	authMode      string
	jwksURL       string
	jwtOpts       auth.Options
	ratePerMinute int
	rateBurst     int
	rateStore     string
	callTimeout   time.Duration
	chatTimeout   time.Duration
	http          server.Config
}

func loadConfig() (config, error) {
	r := env.New()
	c := config{
		Common:   service.ReadCommon(r, 8080),
		authMode: r.String("AUTH_MODE", "none"),
		jwksURL:  r.String("JWT_JWKS_URL", ""),
		jwtOpts: auth.Options{Issuer: r.String("JWT_ISSUER", ""), Audience: r.String("JWT_AUDIENCE", ""),
			Leeway: r.Duration("JWT_LEEWAY", 30*time.Second)},
		ratePerMinute: r.Int("RATE_LIMIT_PER_MINUTE", 30, 0, 100000),
		rateBurst:     r.Int("RATE_LIMIT_BURST", 10, 1, 100000),
		rateStore:     r.String("RATE_LIMIT_STORE", "gateway-state"),
		callTimeout:   r.Duration("BACKEND_TIMEOUT", 10*time.Second),
		// The same CHAT_TIMEOUT as chat-service, which answers 504 when it is
		// over; the gateway waits a little longer so it sees that answer.
		chatTimeout: r.Duration("CHAT_TIMEOUT", 60*time.Second) + 15*time.Second,
		http: server.Config{
			MaxDepth:        r.Int("GRAPHQL_MAX_DEPTH", 12, 2, 100),
			MaxComplexity:   r.Int("GRAPHQL_MAX_COMPLEXITY", 500, 10, 100000),
			Introspection:   r.Bool("GRAPHQL_INTROSPECTION", true),
			KeepAlive:       r.Duration("WS_KEEPALIVE", 10*time.Second),
			InitTimeout:     r.Duration("WS_INIT_TIMEOUT", 10*time.Second),
			SubscriberQueue: r.Int("SUBSCRIBER_QUEUE", 64, 1, 100000),
			PubSub:          r.String("GATEWAY_PUBSUB", "gateway-pubsub"),
			Suggestions:     r.Bool("GRAPHQL_SUGGESTIONS", true),
		},
	}
	for _, o := range strings.Split(r.String("CORS_ORIGINS", ""), ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.http.AllowedOrigins = append(c.http.AllowedOrigins, o)
		}
	}
	err := r.Err()
	if c.authMode != "none" && c.authMode != "jwt" {
		err = errors.Join(err, fmt.Errorf("AUTH_MODE=%q: want none or jwt", c.authMode))
	}
	c.http.AuthMode = c.authMode
	c.http.AppToken = c.AppToken
	return c, err
}

func main() {
	cfg, err := loadConfig()
	service.Main("gateway", err, cfg.Port, "/healthz", func(ctx context.Context) error { return run(ctx, cfg) })
}

// gcPercent is the gateway's GOGC unless the environment sets one. The
// gateway allocates ~30 KB per request and keeps little (a few MiB, plus a few
// KiB per open subscription), so with Go's default of 100 it collects many
// times a second under load; at 400 it spends about 15% less CPU per request
// for a larger heap.
const gcPercent = 400

func run(ctx context.Context, cfg config) error {
	log, stopTracing, err := service.Observe(ctx, "gateway", cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	defer stopTracing()
	gctune.Apply(gcPercent, log)
	ln, err := internalserver.Listen(cfg.Addr())
	if err != nil {
		return err
	}
	initCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	dc, err := daprc.Connect(initCtx, log)
	if err != nil {
		return err
	}
	defer dc.Close()
	b := &backend.Dapr{C: dc, Timeout: cfg.callTimeout, ChatTimeout: cfg.chatTimeout}
	guard := &auth.Guard{Mode: cfg.authMode}
	switch {
	case cfg.authMode == "none":
		log.Warn("AUTH_MODE=none: clients are not authenticated; userId is taken from the arguments")
	case cfg.jwksURL != "":
		guard.Verifier = &auth.JWKS{URL: cfg.jwksURL, Opts: cfg.jwtOpts}
		log.Info("AUTH_MODE=jwt: RS256 tokens, keys from the JWKS URL", "jwks_url", cfg.jwksURL)
	default:
		m, err := dc.GetSecret(initCtx, "secretstore", "gateway-jwt-secret", nil)
		if err != nil {
			return fmt.Errorf("AUTH_MODE=jwt: reading gateway-jwt-secret from the secret store: %w", err)
		}
		secret := m["gateway-jwt-secret"]
		if len(secret) < 32 {
			return errors.New("AUTH_MODE=jwt: the secret gateway-jwt-secret must hold at least 32 bytes (or set JWT_JWKS_URL for RS256)")
		}
		guard.Verifier = auth.HS256{Secret: []byte(secret), Opts: cfg.jwtOpts}
		log.Info("AUTH_MODE=jwt: HS256 tokens, signing secret from the Dapr secret store")
	}
	cfg.http.Guard = guard
	if cfg.rateStore != "" {
		// One limit across every replica, kept in the gateway's state store.
		cfg.http.Turns = ratelimit.NewShared(backend.LimitStore{C: dc, Store: cfg.rateStore, Prefix: "turns|"}, cfg.ratePerMinute, cfg.rateBurst, log)
	} else {
		cfg.http.Turns = ratelimit.New(cfg.ratePerMinute, cfg.rateBurst)
	}
	srv := server.New(cfg.http, b, log)
	ready := func(ctx context.Context) error {
		h := b.Health(ctx)
		if h.Sidecar != "ok" {
			return fmt.Errorf("sidecar unavailable")
		}
		for app, st := range h.Apps {
			if st == "unavailable" {
				return fmt.Errorf("%s unavailable", app)
			}
		}
		return nil
	}
	if addr := os.Getenv("PPROF_ADDR"); addr != "" { // profiling, for operators; bind it to loopback
		go func() {
			log.Info("pprof listening", "addr", addr)
			_ = http.ListenAndServe(addr, http.DefaultServeMux)
		}()
	}
	log.Info("ready", "auth_mode", cfg.authMode, "graphql", fmt.Sprintf("http://%s/graphql", ln.Addr()))
	return internalserver.Serve(ctx, ln, srv.Routes(ready), 10*time.Second, log, srv.CloseWebsockets)
}
