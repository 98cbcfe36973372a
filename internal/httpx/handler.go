package httpx

import (
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/daca-go/daca/internal/contract"
)

// HandlerFunc is an HTTP handler that returns its error instead of
// answering it: Handle answers it, in one place.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle adapts h: an error it returns is answered as Error does
// ({"detail"} with the status of its code; internal details logged with the
// request's logger).
func Handle(log *slog.Logger, h HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			Error(w, r, log, err)
		}
	}
}

// PathID is the path parameter name of r (a chi route's {name}), checked as
// an id (contract.CheckID: BAD_USER_INPUT naming the parameter otherwise).
func PathID(r *http.Request, name string) (string, error) {
	id := chi.URLParam(r, name)
	if err := contract.CheckID(name, id); err != nil {
		return "", err
	}
	return id, nil
}
