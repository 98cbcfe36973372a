package main

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/daca-go/daca/gateway/auth"
)

// TestHS256Secret: the signing secret must hold at least 32 bytes (the
// gateway does not start otherwise, and says why without the secret), and
// JWT_ISSUER and JWT_AUDIENCE are checked when set.
func TestHS256Secret(t *testing.T) {
	for _, n := range []int{0, 16, 31} {
		secret := strings.Repeat("s", n)
		if _, err := hs256(secret, auth.Options{}); err == nil || (n > 0 && strings.Contains(err.Error(), secret)) {
			t.Fatalf("a %d-byte secret: %v; want refused, without the secret in the message", n, err)
		}
	}
	secret := strings.Repeat("k", 32)
	v, err := hs256(secret, auth.Options{Issuer: "iss-1", Audience: "aud-1", Leeway: time.Second})
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
