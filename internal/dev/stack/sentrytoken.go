package stack

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Sentry's JWKS validator: a process gets an identity (its SPIFFE
// certificate) only with a token that names that identity, signed by a
// key in the JWKS sentry trusts. Without it (sentry's insecure validator,
// Dapr's standalone default) any process that reaches sentry could ask
// for any app id's certificate. On Kubernetes, sentry's kubernetes
// validator checks the pod's service account token instead; here the
// cluster is its own issuer: one key per start, and a token per process,
// given to it in a file (DAPR_SENTRY_TOKEN_FILE).

// tokenTTL is how long a token is valid: sidecars read it again at every
// renewal of their certificate (workloadCertTTL 24h), so longer than a
// cluster's run.
const tokenTTL = 7 * 24 * time.Hour

// issuer signs the cluster's sentry tokens.
type issuer struct {
	key ed25519.PrivateKey
	kid string
	dir string // where the tokens are written
}

func newIssuer(dir string) (*issuer, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(pub)
	return &issuer{key: key, kid: base64.RawURLEncoding.EncodeToString(sum[:8]), dir: dir}, nil
}

// JWKS is the key set sentry validates tokens with (its public key only).
func (is *issuer) JWKS() string {
	b, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": is.kid,
		"x": base64.RawURLEncoding.EncodeToString(is.key.Public().(ed25519.PublicKey)),
	}}})
	return string(b)
}

// spiffeID is the identity a process asks sentry for.
func spiffeID(trustDomain, namespace, appID string) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/%s", trustDomain, namespace, appID)
}

// token signs a JWT for subject (a SPIFFE id) to present to the sentry
// whose id is audience.
func (is *issuer) token(subject, audience string, now time.Time) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(map[string]string{"alg": "EdDSA", "typ": "JWT", "kid": is.kid}) + "." +
		enc(map[string]any{"sub": subject, "aud": audience, "iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(tokenTTL).Unix()})
	return signed + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(is.key, []byte(signed)))
}

// file writes subject's token (to present to sentry audience) and returns
// its path.
func (is *issuer) file(subject, audience string) (string, error) {
	name := filepath.Join(is.dir, fmt.Sprintf("%x.jwt", sha256.Sum256([]byte(subject))))
	if err := os.WriteFile(name, []byte(is.token(subject, audience, time.Now())), 0o600); err != nil {
		return "", err
	}
	return name, nil
}
