package service

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/go-chi/chi/v5"

	"github.com/daca-go/daca/internal/dev/testkit"
)

type sidecar struct{}

func (sidecar) GetMetadata(context.Context) (*dapr.GetMetadataResponse, error) {
	return &dapr.GetMetadataResponse{}, nil
}

// TestActorCallsWaitUntilReady: before the service is ready, its routes
// answer 503 at once, but an actor's call (Dapr placed the actor here
// already) waits and is served once the service is ready.
func TestActorCallsWaitUntilReady(t *testing.T) {
	t.Parallel()
	b := &Base{Log: testkit.Quiet(),
		Actors: func(r chi.Router) {
			r.Put("/actors/t/{id}/method/m", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
		}}
	h := b.Router(func(r chi.Router) {
		r.Get("/work", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	})
	serve := func(method, path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), method, path, nil))
		return rec.Code
	}
	if code := serve(http.MethodGet, "/work"); code != http.StatusServiceUnavailable {
		t.Fatalf("a route before ready: %d; want 503", code)
	}
	done := make(chan int, 1)
	go func() { done <- serve(http.MethodPut, "/actors/t/1/method/m") }()
	select {
	case code := <-done:
		t.Fatalf("the actor call answered %d before the service was ready", code)
	case <-time.After(100 * time.Millisecond): // long enough for a wrong early answer to show
	}
	b.SetReady(sidecar{}, "offline")
	if code := <-done; code != http.StatusOK {
		t.Fatalf("the actor call answered %d once ready; want 200", code)
	}
	if code := serve(http.MethodGet, "/work"); code != http.StatusOK {
		t.Fatalf("a route once ready: %d", code)
	}
}
