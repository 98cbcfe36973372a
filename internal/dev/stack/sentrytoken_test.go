package stack

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// TestSentryTokens: a token names its subject and sentry as its audience,
// is valid from a minute before it was made until tokenTTL after, and is
// signed by the key the JWKS publishes (and only its public half).
func TestSentryTokens(t *testing.T) {
	t.Parallel()
	is, err := newIssuer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal([]byte(is.JWKS()), &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("JWKS %s: %v", is.JWKS(), err)
	}
	k := set.Keys[0]
	if _, private := k["d"]; private || k["kty"] != "OKP" || k["crv"] != "Ed25519" || k["kid"] != is.kid {
		t.Fatalf("JWKS key %v", k)
	}
	pub, err := base64.RawURLEncoding.DecodeString(k["x"])
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	sub := spiffeID("public", clusterNamespace, "chat-service")
	tok := is.token(sub, sentryAudience, now)
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q", tok)
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	if !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
		t.Fatal("the signature does not verify with the JWKS key")
	}
	var header map[string]string
	var claims struct {
		Sub, Aud      string
		Iat, Nbf, Exp int64
	}
	for i, v := range []any{&header, &claims} {
		b, _ := base64.RawURLEncoding.DecodeString(parts[i])
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	if header["alg"] != "EdDSA" || header["kid"] != is.kid {
		t.Fatalf("header %v", header)
	}
	if claims.Sub != "spiffe://public/ns/daca/chat-service" || claims.Aud != "spiffe://localhost/ns/default/dapr-sentry" ||
		claims.Nbf != now.Add(-time.Minute).Unix() || claims.Exp != now.Add(tokenTTL).Unix() {
		t.Fatalf("claims %+v", claims)
	}
	name, err := is.file(sub, sentryAudience)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(name); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file %s: %v %v; want readable by its owner only", name, fi.Mode(), err)
	}
}
