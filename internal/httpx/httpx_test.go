package httpx

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/dev/testkit"
)

func TestDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		code       apperr.Code
	}{
		{"ok", `{"a":"x"}`, ""},
		{"empty", ``, apperr.Invalid},
		{"syntax", `{"a":`, apperr.Invalid},
		{"type", `{"a":5}`, apperr.Invalid},
		{"too large", `{"a":"` + strings.Repeat("x", MaxBody) + `"}`, apperr.TooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v struct{ A string }
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.body))
			err := Decode(httptest.NewRecorder(), r, &v)
			if apperr.CodeOf(err) != tt.code {
				t.Fatalf("err = %v; want %q", err, tt.code)
			}
		})
	}
}

func TestErrorHidesInternals(t *testing.T) {
	t.Parallel()
	log := testkit.Quiet()
	w := httptest.NewRecorder()
	err := apperr.Wrap(apperr.Unavailable, io.ErrUnexpectedEOF, "the state store is unavailable")
	Error(w, httptest.NewRequest(http.MethodGet, "/", nil), log, err)
	if w.Code != http.StatusServiceUnavailable || strings.Contains(w.Body.String(), "unexpected EOF") ||
		!strings.Contains(w.Body.String(), `"detail":"the state store is unavailable"`) {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}

func TestAppToken(t *testing.T) {
	t.Parallel()
	h := AppToken("secret")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	tests := []struct {
		path, token string
		want        int
	}{
		{"/chat", "", 401},
		{"/chat", "wrong", 401},
		{"/chat", "secret", 200},
		{"/health", "", 200},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, tt.path, nil)
		if tt.token != "" {
			r.Header.Set("dapr-api-token", tt.token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tt.want {
			t.Errorf("%s with %q: %d; want %d", tt.path, tt.token, w.Code, tt.want)
		}
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, header string
		keep         bool // the caller's id is echoed
	}{
		{"caller's id", "abc-123", true},
		{"none", "", false},
		{"too long", strings.Repeat("x", 129), false},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := RequestID(slog.New(slog.DiscardHandler))(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.header != "" {
				r.Header.Set("X-Request-Id", tt.header)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			got := w.Header().Get("X-Request-Id")
			if tt.keep {
				if got != tt.header {
					t.Fatalf("X-Request-Id %q, want the caller's %q", got, tt.header)
				}
				return
			}
			u, err := uuid.Parse(got)
			if err != nil || u.Version() != 4 || u.Variant() != uuid.RFC4122 || seen[got] {
				t.Fatalf("X-Request-Id %q: %v, version %d, variant %v, seen before %v; want a new random UUID", got, err, u.Version(), u.Variant(), seen[got])
			}
			seen[got] = true
		})
	}
}
