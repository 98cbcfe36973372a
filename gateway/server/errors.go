package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/logging"
)

// presentError maps an error to a GraphQL error with extensions.code, once.
// Client-safe messages only; internal details go to the log.
func (s *Server) presentError(ctx context.Context, e error) *gqlerror.Error {
	gerr := graphql.DefaultErrorPresenter(ctx, e)
	var ae *apperr.Error
	if !errors.As(e, &ae) {
		var ge *gqlerror.Error
		if errors.As(e, &ge) && ge.Err == nil {
			if msg, ok := bodyError(gerr.Message); ok {
				gerr.Message = msg
				gerr.Extensions = map[string]any{"code": "BAD_REQUEST"}
			}
			return gerr // parse and validation errors: already client-safe
		}
		logging.From(ctx, s.log).Error("graphql: unexpected error", "err", e)
		gerr.Message = "internal error"
		gerr.Extensions = map[string]any{"code": "INTERNAL"}
		return gerr
	}
	code := GraphQLCode(ae.Code)
	gerr.Message = ae.Message
	gerr.Extensions = map[string]any{"code": code}
	if ae.RetryAfter > 0 {
		gerr.Extensions["retryAfter"] = int((ae.RetryAfter + time.Second - 1) / time.Second)
	}
	if !ae.ResetsAt.IsZero() { // a quota: when it resets
		gerr.Extensions["resetsAt"] = ae.ResetsAt.UTC().Format(time.RFC3339)
	}
	log := logging.From(ctx, s.log)
	switch code {
	case "INTERNAL", "UNAVAILABLE":
		log.Error("graphql: request failed", "code", code, "err", e)
	default:
		log.Info("graphql: request refused", "code", code, "err", e)
	}
	return gerr
}

// GraphQLCode maps an apperr code to extensions.code.
func GraphQLCode(c apperr.Code) string {
	switch c {
	case apperr.Invalid, apperr.TooLarge:
		return "BAD_USER_INPUT"
	case apperr.NotFound:
		return "NOT_FOUND"
	case apperr.Unauthenticated:
		return "UNAUTHENTICATED"
	case apperr.Forbidden:
		return "FORBIDDEN"
	case apperr.RateLimited:
		return "RATE_LIMITED"
	case apperr.ResourceExhausted:
		return "RESOURCE_EXHAUSTED"
	case apperr.Conflict:
		return "CONFLICT"
	case apperr.Unavailable, apperr.Timeout:
		return "UNAVAILABLE"
	default:
		return "INTERNAL"
	}
}

// bodyError rewrites gqlgen's answers to a request body it cannot read or
// that is not one JSON operation, which quote the whole body back
// ("... body:<the body>"): it says what is wrong, without the body.
func bodyError(msg string) (string, bool) {
	const decode, read, get = "json request body could not be decoded: ", "could not read request body: ", "could not get json request body: "
	switch {
	case !strings.HasPrefix(msg, decode) && !strings.HasPrefix(msg, read) && !strings.HasPrefix(msg, get):
		return "", false
	case strings.Contains(msg, "request body too large"):
		return "the request body is larger than the limit", true
	case strings.Contains(msg, "cannot unmarshal array"):
		return "batched operations (a JSON array) are not supported: send one operation per request", true
	case strings.HasPrefix(msg, read), strings.HasPrefix(msg, get): // get: gqlgen's multipart/mixed (@defer)
		return "the request body could not be read", true
	}
	detail, _, _ := strings.Cut(strings.TrimPrefix(msg, decode), " body:")
	return "the request body is not a JSON object with a query: " + detail, true
}

// writeGraphQLError answers a request refused before GraphQL ran, in the
// GraphQL response shape.
func writeGraphQLError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"message": msg, "extensions": map[string]any{"code": code}}}})
}
