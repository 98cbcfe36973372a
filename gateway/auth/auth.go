// Package auth authenticates gateway clients: who the caller is
// (graph.Callers). What a caller may do is decided by the resolvers' access
// rules (graph/access.go).
//
// AUTH_MODE=jwt validates a bearer token (HTTP Authorization header, or the
// connection_init payload on a websocket): HS256 with a signing secret from
// the Dapr secret store (gateway-jwt-secret), or RS256 with keys from a JWKS
// URL. The token's sub is the user; a role: admin claim may act for anyone.
// AUTH_MODE=none trusts the userId in the arguments.
package auth

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/daca-go/daca/graph"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

// Identity is an authenticated caller.
type Identity struct {
	Subject string
	Admin   bool
}

type ctxKey struct{}

// WithIdentity returns ctx carrying the caller.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// From returns the caller, if authenticated.
func From(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// Verifier checks a raw token.
type Verifier interface {
	Verify(ctx context.Context, raw string) (Identity, error)
}

// Options common to both verifiers.
type Options struct {
	Issuer   string // JWT_ISSUER; checked when set
	Audience string // JWT_AUDIENCE; checked when set
	Leeway   time.Duration
}

func (o Options) parserOpts(alg string) []jwt.ParserOption {
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{alg}), jwt.WithExpirationRequired(), jwt.WithLeeway(o.Leeway)}
	if o.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		opts = append(opts, jwt.WithAudience(o.Audience))
	}
	return opts
}

type claims struct {
	jwt.RegisteredClaims
	Role string `json:"role"`
}

func identity(tok *jwt.Token) (Identity, error) {
	c, ok := tok.Claims.(*claims)
	if !ok || c.Subject == "" {
		return Identity{}, errors.New("token has no sub")
	}
	return Identity{Subject: c.Subject, Admin: c.Role == "admin"}, nil
}

func unauthenticated(err error) error {
	return apperr.Wrap(apperr.Unauthenticated, err, "the bearer token is missing, invalid or expired")
}

// HS256 verifies tokens signed with a shared secret.
type HS256 struct {
	Secret []byte
	Opts   Options
}

// MinSecret is the shortest HS256 signing secret accepted.
const MinSecret = 32

// NewHS256 is the verifier of tokens signed with secret (the secret store's
// gateway-jwt-secret), at least MinSecret bytes long.
func NewHS256(secret string, opts Options) (HS256, error) {
	if len(secret) < MinSecret {
		return HS256{}, fmt.Errorf("AUTH_MODE=jwt: the secret %s must hold at least %d bytes, it holds %d (or set JWT_JWKS_URL for RS256)",
			contract.SecretJWT, MinSecret, len(secret))
	}
	return HS256{Secret: []byte(secret), Opts: opts}, nil
}

func (h HS256) Verify(_ context.Context, raw string) (Identity, error) {
	return verify(raw, func(*jwt.Token) (any, error) { return h.Secret, nil }, h.Opts.parserOpts("HS256"))
}

// verify parses and checks a token with the key that key gives, and returns
// its identity; every failure is UNAUTHENTICATED.
func verify(raw string, key jwt.Keyfunc, opts []jwt.ParserOption) (Identity, error) {
	tok, err := jwt.ParseWithClaims(raw, &claims{}, key, opts...)
	if err != nil {
		return Identity{}, unauthenticated(err)
	}
	id, err := identity(tok)
	if err != nil {
		return Identity{}, unauthenticated(err)
	}
	return id, nil
}

// JWKS verifies RS256 tokens with keys fetched from a JWKS URL, cached and
// fetched again (at most every MinRefresh) when a token names an unknown key.
type JWKS struct {
	URL        string
	Opts       Options
	Client     *http.Client
	MinRefresh time.Duration

	mu      sync.Mutex
	keys    map[string]*rsa.PublicKey
	fetched time.Time
}

func (j *JWKS) Verify(ctx context.Context, raw string) (Identity, error) {
	return verify(raw, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		return j.key(ctx, kid)
	}, j.Opts.parserOpts("RS256"))
}

func (j *JWKS) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if k := j.pick(kid); k != nil {
		return k, nil
	}
	min := j.MinRefresh
	if min == 0 {
		min = 30 * time.Second
	}
	if !j.fetched.IsZero() && time.Since(j.fetched) < min {
		return nil, fmt.Errorf("unknown key id %q", kid)
	}
	keys, err := fetchJWKS(ctx, j.client(), j.URL)
	j.fetched = time.Now()
	if err != nil {
		return nil, err
	}
	j.keys = keys
	if k := j.pick(kid); k != nil {
		return k, nil
	}
	return nil, fmt.Errorf("unknown key id %q", kid)
}

func (j *JWKS) pick(kid string) *rsa.PublicKey {
	if kid == "" && len(j.keys) == 1 {
		for _, k := range j.keys {
			return k
		}
	}
	return j.keys[kid]
}

func (j *JWKS) client() *http.Client {
	if j.Client != nil {
		return j.Client
	}
	return &http.Client{Timeout: 5 * time.Second}
}

func fetchJWKS(ctx context.Context, c *http.Client, url string) (map[string]*rsa.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks: %s", resp.Status)
	}
	var set struct {
		Keys []struct {
			Kty, Kid, Use, N, E string
		} `json:"keys"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	keys := map[string]*rsa.PublicKey{}
	for _, k := range set.Keys {
		if k.Kty != "RSA" || (k.Use != "" && k.Use != "sig") {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil || len(e) > 4 {
			continue
		}
		keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	if len(keys) == 0 {
		return nil, errors.New("jwks: no RSA signing keys")
	}
	return keys, nil
}

// BearerToken returns the token of an "Authorization: Bearer …" value.
func BearerToken(header string) string {
	if len(header) > 7 && strings.EqualFold(header[:7], "bearer ") {
		return strings.TrimSpace(header[7:])
	}
	return ""
}

// Guard decides what a caller may do.
type Guard struct {
	Mode     string // none | jwt
	Verifier Verifier
}

// Enabled reports whether callers are authenticated.
func (g *Guard) Enabled() bool { return g != nil && g.Mode == "jwt" }

// Authenticate verifies a raw token into ctx. An empty token leaves ctx
// unauthenticated.
func (g *Guard) Authenticate(ctx context.Context, raw string) (context.Context, error) {
	if !g.Enabled() || raw == "" {
		return ctx, nil
	}
	id, err := g.Verifier.Verify(ctx, raw)
	if err != nil {
		return ctx, err
	}
	return WithIdentity(ctx, id), nil
}

// Require returns the caller, or UNAUTHENTICATED.
func (g *Guard) Require(ctx context.Context) (Identity, error) {
	id, ok := From(ctx)
	if !ok {
		return Identity{}, apperr.New(apperr.Unauthenticated, "a valid bearer token is required")
	}
	return id, nil
}

// Caller implements graph.Callers: the operation's caller, or
// UNAUTHENTICATED.
func (g *Guard) Caller(ctx context.Context) (graph.Caller, error) {
	id, err := g.Require(ctx)
	return graph.Caller{Subject: id.Subject, Admin: id.Admin}, err
}
