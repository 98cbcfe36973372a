// Command gateway is the DACA GraphQL gateway (Dapr app id gateway, port
// 8080): chat mutations, memory queries and live subscriptions, reaching the
// backends only through its own Dapr sidecar. main reads the configuration;
// run (wire.go) assembles the parts and serves until SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/daca-go/daca/gateway/auth"
	"github.com/daca-go/daca/gateway/server"
	"github.com/daca-go/daca/gateway/trusted"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/env"
	"github.com/daca-go/daca/internal/service"
)

type config struct {
	service.Common
	authMode        string
	jwksURL         string
	jwtOpts         auth.Options
	ratePerMinute   int
	rateBurst       int
	rateStore       string
	invocation      string // BACKEND_INVOCATION: http (the sidecar's HTTP API) or grpc (go-sdk)
	daprHTTPPort    int
	daprToken       string
	callTimeout     time.Duration
	chatTimeout     time.Duration
	subscriberQueue int
	runPoll         time.Duration
	apqStore        string        // APQ_STORE: where persisted queries are kept ("": this replica's memory)
	apqTTL          time.Duration // APQ_TTL
	pubsub          string        // GATEWAY_PUBSUB: the component the gateway subscribes with
	http            server.Config
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
		rateStore:     r.String("RATE_LIMIT_STORE", contract.GatewayStateStore),
		invocation:    r.String("BACKEND_INVOCATION", "http"),
		daprHTTPPort:  r.Int("DAPR_HTTP_PORT", 3500, 1, 65535),
		daprToken:     r.String("DAPR_API_TOKEN", ""),
		callTimeout:   r.Duration("BACKEND_TIMEOUT", 10*time.Second),
		// The same CHAT_TIMEOUT as chat-service, which answers 504 when it is
		// over; the gateway waits a little longer so it sees that answer.
		chatTimeout:     r.Duration("CHAT_TIMEOUT", 60*time.Second) + 15*time.Second,
		subscriberQueue: r.Int("SUBSCRIBER_QUEUE", 64, 1, 100000),
		runPoll:         250 * time.Millisecond,
		apqStore:        r.String("APQ_STORE", contract.GatewayStateStore),
		apqTTL:          r.Duration("APQ_TTL", 24*time.Hour),
		pubsub:          r.String("GATEWAY_PUBSUB", contract.GatewayPubSub),
		http: server.Config{
			MaxDepth:      r.Int("GRAPHQL_MAX_DEPTH", 12, 2, 100),
			MaxDeferred:   deferred(r.Int("GRAPHQL_MAX_DEFERRED", 8, 0, 100)),
			MaxComplexity: r.Int("GRAPHQL_MAX_COMPLEXITY", 500, 10, 100000),
			Introspection: r.Bool("GRAPHQL_INTROSPECTION", true),
			KeepAlive:     r.Duration("WS_KEEPALIVE", 10*time.Second),
			InitTimeout:   r.Duration("WS_INIT_TIMEOUT", 10*time.Second),
			Suggestions:   r.Bool("GRAPHQL_SUGGESTIONS", true),
		},
	}
	// Trusted documents: the mode, and the manifests of the clients' builds.
	mode, merr := trusted.ParseMode(r.String("GRAPHQL_TRUSTED_DOCUMENTS", "off"))
	c.http.Trusted, c.http.TrustedDocuments = mode, trusted.New()
	var manifests []string
	for _, p := range strings.Split(r.String("GRAPHQL_TRUSTED_MANIFESTS", ""), ",") {
		if p = strings.TrimSpace(p); p != "" {
			manifests = append(manifests, p)
		}
	}
	if merr == nil {
		merr = c.http.TrustedDocuments.Load(manifests...)
	}
	for _, o := range strings.Split(r.String("CORS_ORIGINS", ""), ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.http.AllowedOrigins = append(c.http.AllowedOrigins, o)
		}
	}
	err := errors.Join(r.Err(), merr)
	if c.authMode != "none" && c.authMode != "jwt" {
		err = errors.Join(err, fmt.Errorf("AUTH_MODE=%q: want none or jwt", c.authMode))
	}
	if c.invocation != "http" && c.invocation != "grpc" {
		err = errors.Join(err, fmt.Errorf("BACKEND_INVOCATION=%q: want http or grpc", c.invocation))
	}
	c.http.AppToken = c.AppToken
	return c, err
}

// deferred is GRAPHQL_MAX_DEFERRED as server.Config takes it (0: refused).
func deferred(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

func main() {
	cfg, err := loadConfig()
	service.Main(contract.GatewayApp, err, cfg.Port, "/healthz", func(ctx context.Context) error { return run(ctx, cfg) })
}
