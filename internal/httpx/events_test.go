package httpx

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// TestEvents: one adapter gives Dapr its answer for every event handler:
// SUCCESS when applied, RETRY and DROP as the handler says, DROP for what
// cannot be read, always with 200; the handler sees the CloudEvent.
func TestEvents(t *testing.T) {
	t.Parallel()
	type data struct {
		N int `json:"n"`
	}
	const good = `{"id":"ev-1","data":{"n":1}}`
	tests := []struct {
		name, body string
		err        error
		want       string
		called     bool
	}{
		{"applied", good, nil, contract.DeliverySuccess, true},
		{"retry", good, Retry("the store is down", errors.New("dial")), contract.DeliveryRetry, true},
		{"drop", good, Drop("not yours", nil), contract.DeliveryDrop, true},
		{"any other error drops", good, apperr.New(apperr.Internal, "bug"), contract.DeliveryDrop, true},
		{"not JSON", `{`, nil, contract.DeliveryDrop, false},
		{"no id", `{"data":{"n":1}}`, nil, contract.DeliveryDrop, false},
		{"too large", `{"id":"x","data":"` + strings.Repeat("a", contract.MaxEventBody) + `"}`, nil, contract.DeliveryDrop, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var called bool
			var counted string
			h := Events(testkit.Quiet(), func(s string) { counted = s }, func(_ context.Context, ce contract.CloudEvent, d *data) error {
				called = true
				if ce.ID != "ev-1" || d.N != 1 {
					t.Errorf("handler got %+v %+v", ce, d)
				}
				return tt.err
			})
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/events/x", strings.NewReader(tt.body)))
			if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"status":"`+tt.want+`"`) {
				t.Fatalf("%d %s; want 200 %s", w.Code, w.Body, tt.want)
			}
			if called != tt.called || counted != tt.want {
				t.Fatalf("handler called %v, counted %q; want %v, %q", called, counted, tt.called, tt.want)
			}
		})
	}
}

// TestHandle: a handler's error is answered in one place, with the status
// of its code and its client-safe message; PathID checks the id.
func TestHandle(t *testing.T) {
	t.Parallel()
	r := chi.NewRouter()
	r.Get("/users/{user_id}", Handle(testkit.Quiet(), func(w http.ResponseWriter, r *http.Request) error {
		id, err := PathID(r, "user_id")
		if err != nil {
			return err
		}
		if id == "gone" {
			return apperr.New(apperr.NotFound, "user %s not found", id)
		}
		if id == "bug" {
			return errors.New("nil pointer with secret sk-123")
		}
		JSON(w, http.StatusOK, map[string]string{"user_id": id})
		return nil
	}))
	tests := []struct {
		path   string
		status int
		body   string
	}{
		{"/users/ana", 200, `"user_id":"ana"`},
		{"/users/gone", 404, `user gone not found`},
		{"/users/bad%20id", 400, `user_id`},
		{"/users/bug", 500, `internal error`},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, tt.path, nil))
		if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.body) || strings.Contains(w.Body.String(), "sk-123") {
			t.Errorf("%s: %d %s; want %d with %q", tt.path, w.Code, w.Body, tt.status, tt.body)
		}
	}
}
