package auth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/daca-go/daca/graph"
	"github.com/daca-go/daca/internal/apperr"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func hs(t *testing.T, c jwt.MapClaims, method jwt.SigningMethod, key any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestHS256(t *testing.T) {
	t.Parallel()
	v := HS256{Secret: secret, Opts: Options{Issuer: "daca"}}
	exp := time.Now().Add(time.Hour).Unix()
	tests := []struct {
		name  string
		token string
		want  Identity
		ok    bool
	}{
		{"valid", hs(t, jwt.MapClaims{"sub": "ana", "exp": exp, "iss": "daca"}, jwt.SigningMethodHS256, secret), Identity{Subject: "ana"}, true},
		{"admin", hs(t, jwt.MapClaims{"sub": "root", "role": "admin", "exp": exp, "iss": "daca"}, jwt.SigningMethodHS256, secret), Identity{Subject: "root", Admin: true}, true},
		{"expired", hs(t, jwt.MapClaims{"sub": "ana", "exp": time.Now().Add(-time.Hour).Unix(), "iss": "daca"}, jwt.SigningMethodHS256, secret), Identity{}, false},
		{"no exp", hs(t, jwt.MapClaims{"sub": "ana", "iss": "daca"}, jwt.SigningMethodHS256, secret), Identity{}, false},
		{"wrong secret", hs(t, jwt.MapClaims{"sub": "ana", "exp": exp, "iss": "daca"}, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx")), Identity{}, false},
		{"wrong issuer", hs(t, jwt.MapClaims{"sub": "ana", "exp": exp, "iss": "evil"}, jwt.SigningMethodHS256, secret), Identity{}, false},
		{"alg none", hs(t, jwt.MapClaims{"sub": "ana", "exp": exp, "iss": "daca"}, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType), Identity{}, false},
		{"no sub", hs(t, jwt.MapClaims{"exp": exp, "iss": "daca"}, jwt.SigningMethodHS256, secret), Identity{}, false},
		{"garbage", "not.a.token", Identity{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Verify(t.Context(), tt.token)
			if tt.ok != (err == nil) || got != tt.want {
				t.Fatalf("Verify = %+v, %v", got, err)
			}
			if err != nil && apperr.CodeOf(err) != apperr.Unauthenticated {
				t.Fatalf("code %s", apperr.CodeOf(err))
			}
		})
	}
}

func TestJWKS(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	fetches := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches++
		json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "kid": "k1", "use": "sig",
			"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
		}}})
	}))
	defer srv.Close()
	v := &JWKS{URL: srv.URL, MinRefresh: time.Hour}
	sign := func(k *rsa.PrivateKey, kid string, method jwt.SigningMethod) string {
		tok := jwt.NewWithClaims(method, jwt.MapClaims{"sub": "bo", "exp": time.Now().Add(time.Hour).Unix()})
		tok.Header["kid"] = kid
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"valid", sign(key, "k1", jwt.SigningMethodRS256), true},
		{"other key", sign(other, "k1", jwt.SigningMethodRS256), false},
		{"unknown kid", sign(key, "k2", jwt.SigningMethodRS256), false},
		{"HS256 with the public key as secret", hs(t, jwt.MapClaims{"sub": "bo", "exp": time.Now().Add(time.Hour).Unix()}, jwt.SigningMethodHS256, key.N.Bytes()), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tt.token)
			if tt.ok != (err == nil) || (tt.ok && id.Subject != "bo") {
				t.Fatalf("Verify = %+v, %v", id, err)
			}
		})
	}
	if fetches != 1 {
		t.Fatalf("JWKS fetched %d times; want 1 (cached, refresh rate-limited)", fetches)
	}
}

func TestGuardCaller(t *testing.T) {
	t.Parallel()
	g := &Guard{Mode: "jwt"}
	tests := []struct {
		name string
		g    *Guard
		ctx  context.Context
		want graph.Caller
		code apperr.Code
	}{
		{"a user", g, WithIdentity(context.Background(), Identity{Subject: "ana"}), graph.Caller{Subject: "ana"}, ""},
		{"an admin", g, WithIdentity(context.Background(), Identity{Subject: "root", Admin: true}), graph.Caller{Subject: "root", Admin: true}, ""},
		{"anonymous", g, context.Background(), graph.Caller{}, apperr.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.g.Caller(tt.ctx)
			if apperr.CodeOf(err) != tt.code || got != tt.want {
				t.Fatalf("Caller = %+v, %v; want %+v, code %q", got, err, tt.want, tt.code)
			}
		})
	}
	for _, g := range []*Guard{nil, {Mode: "none"}} {
		if g.Enabled() {
			t.Errorf("guard %+v is enabled", g)
		}
	}
	if !g.Enabled() {
		t.Error("jwt guard is not enabled")
	}
}

// TestNewHS256: the signing secret must hold at least 32 bytes (the
// gateway does not start otherwise, and says why without the secret), and
// JWT_ISSUER and JWT_AUDIENCE are checked when set.
func TestNewHS256(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 16, 31} {
		secret := strings.Repeat("s", n)
		if _, err := NewHS256(secret, Options{}); err == nil || (n > 0 && strings.Contains(err.Error(), secret)) {
			t.Fatalf("a %d-byte secret: %v; want refused, without the secret in the message", n, err)
		}
	}
	secret := strings.Repeat("k", 32)
	v, err := NewHS256(secret, Options{Issuer: "iss-1", Audience: "aud-1", Leeway: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sign := func(c jwt.MapClaims) string {
		s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
		return s
	}
	exp := time.Now().Add(time.Hour).Unix()
	tests := []struct {
		name   string
		claims jwt.MapClaims
		ok     bool
	}{
		{"issuer and audience", jwt.MapClaims{"sub": "ana", "exp": exp, "iss": "iss-1", "aud": "aud-1"}, true},
		{"audience in a list", jwt.MapClaims{"sub": "ana", "exp": exp, "iss": "iss-1", "aud": []string{"other", "aud-1"}}, true},
		{"wrong audience", jwt.MapClaims{"sub": "ana", "exp": exp, "iss": "iss-1", "aud": "aud-2"}, false},
		{"no audience", jwt.MapClaims{"sub": "ana", "exp": exp, "iss": "iss-1"}, false},
		{"wrong issuer", jwt.MapClaims{"sub": "ana", "exp": exp, "iss": "iss-2", "aud": "aud-1"}, false},
		{"no exp", jwt.MapClaims{"sub": "ana", "iss": "iss-1", "aud": "aud-1"}, false},
		{"no sub", jwt.MapClaims{"exp": exp, "iss": "iss-1", "aud": "aud-1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := v.Verify(t.Context(), sign(tt.claims))
			if (err == nil) != tt.ok || (tt.ok && id.Subject != "ana") {
				t.Fatalf("Verify = %+v, %v; want ok %v", id, err, tt.ok)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"Bearer abc": "abc", "bearer  abc ": "abc", "Basic abc": "", "": "", "Bearer": ""} {
		if got := BearerToken(in); got != want {
			t.Errorf("BearerToken(%q) = %q; want %q", in, got, want)
		}
	}
}
