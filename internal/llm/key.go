package llm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/daca-go/daca/internal/contract"
	dapr "github.com/dapr/go-sdk/client"
)

// KeySource supplies the API key.
type KeySource interface {
	// Key returns the current key ("" selects the offline model).
	Key(ctx context.Context) (string, error)
	// Refresh reads the key again (after the provider refused it).
	Refresh(ctx context.Context) (string, error)
}

// SecretGetter is the part of the Dapr client that reads secrets.
type SecretGetter interface {
	GetSecret(ctx context.Context, storeName, key string, meta map[string]string) (map[string]string, error)
}

var _ SecretGetter = (dapr.Client)(nil)

// SecretKey reads the key from the Dapr secret store (store "secretstore",
// key "gemini-api-key" by default) and caches it. It is the only source of
// the key: there is no environment variable.
type SecretKey struct {
	Client SecretGetter
	Store  string
	Name   string
	Log    *slog.Logger

	mu     sync.Mutex
	key    string
	loaded bool
}

// Key returns the cached key, reading it on first use; it retries until the
// sidecar answers or ctx ends.
func (s *SecretKey) Key(ctx context.Context) (string, error) {
	s.mu.Lock()
	if s.loaded {
		k := s.key
		s.mu.Unlock()
		return k, nil
	}
	s.mu.Unlock()
	return s.Refresh(ctx)
}

// Refresh reads the key from the secret store again.
func (s *SecretKey) Refresh(ctx context.Context) (string, error) {
	store, name := s.Store, s.Name
	if store == "" {
		store = contract.SecretStore
	}
	if name == "" {
		name = contract.SecretLLMKey
	}
	delay := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		m, err := s.Client.GetSecret(ctx, store, name, nil)
		if err == nil {
			k := m[name]
			s.mu.Lock()
			s.key, s.loaded = k, true
			s.mu.Unlock()
			return k, nil
		}
		if attempt == 1 || attempt%10 == 0 {
			s.Log.Warn("LLM: reading the API key from the Dapr secret store failed; retrying",
				"store", store, "secret", name, "attempt", attempt, "err", Redact(err.Error()))
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("reading secret %q from store %q: %w", name, store, errors.Join(ctx.Err(), err))
		case <-time.After(delay):
		}
		if delay < 2*time.Second {
			delay *= 2
		}
	}
}

// StaticKey is a fixed key (tests).
type StaticKey string

func (k StaticKey) Key(context.Context) (string, error)     { return string(k), nil }
func (k StaticKey) Refresh(context.Context) (string, error) { return string(k), nil }

var (
	bearerRE = regexp.MustCompile(`(?i)(bearer\s+|api[_ -]?key[^:=]{0,20}[=:]\s*"?|key=)[A-Za-z0-9._\-]{6,}`)
	keyRE    = regexp.MustCompile(`\b(sk-[A-Za-z0-9_\-]{6,}|AIza[0-9A-Za-z_\-]{20,})`)
)

// Redact hides bearer tokens, key parameters and strings shaped like OpenAI
// or Google API keys in a text.
func Redact(s string) string {
	s = urlRE.ReplaceAllStringFunc(s, RedactURL)
	s = bearerRE.ReplaceAllString(s, "${1}[REDACTED]")
	return keyRE.ReplaceAllString(s, "[REDACTED]")
}

var urlRE = regexp.MustCompile(`https?://[^\s"']+`)

// RedactURL returns a URL fit for a log line: a password in it and the
// value of every query parameter (where a key may be put, as Gemini's
// ?key=…) are replaced by [REDACTED].
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "[REDACTED URL]"
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
		}
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{"REDACTED"}
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// authRetry sets the Authorization header from the key source, re-reads the
// key once after a 401 (a rotated key is picked up without a restart), and
// retries 429 and 5xx with exponential backoff, honouring Retry-After.
type authRetry struct {
	base       http.RoundTripper
	keys       KeySource
	maxRetries int
	log        *slog.Logger
}

func (t *authRetry) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	key, err := t.keys.Key(ctx)
	if err != nil {
		return nil, err
	}
	refreshed := false
	for attempt := 0; ; attempt++ {
		r := req.Clone(ctx)
		if req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			r.Body = body
		}
		r.Header.Set("Authorization", "Bearer "+key)
		resp, err := t.base.RoundTrip(r)
		if err != nil {
			if attempt < t.maxRetries && ctx.Err() == nil && req.GetBody != nil {
				if werr := sleep(ctx, backoff(attempt)); werr != nil {
					return nil, err
				}
				continue
			}
			return nil, err
		}
		switch {
		case resp.StatusCode == http.StatusUnauthorized && !refreshed:
			refreshed = true
			newKey, kerr := t.keys.Refresh(ctx)
			if kerr == nil && newKey != key && newKey != "" {
				t.log.Info("LLM: the provider refused the API key; using the key just read from the secret store")
				drain(resp)
				key = newKey
				continue
			}
			return resp, nil
		case (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500) &&
			attempt < t.maxRetries && req.GetBody != nil:
			wait := retryAfter(resp.Header.Get("Retry-After"))
			if wait == 0 {
				wait = backoff(attempt)
			}
			if wait > 30*time.Second {
				return resp, nil // longer than we are willing to hold a turn
			}
			t.log.Info("LLM: provider busy; retrying", "status", resp.StatusCode, "wait_ms", wait.Milliseconds(), "attempt", attempt+1)
			drain(resp)
			if err := sleep(ctx, wait); err != nil {
				return nil, err
			}
			continue
		}
		return resp, nil
	}
}

func drain(resp *http.Response) {
	buf := make([]byte, 4096)
	for {
		if _, err := resp.Body.Read(buf); err != nil {
			break
		}
	}
	resp.Body.Close()
}

func backoff(attempt int) time.Duration {
	d := 250 * time.Millisecond << attempt
	if d > 8*time.Second {
		d = 8 * time.Second
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
