package apperr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestCodeAndMessageOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		code Code
		msg  string
	}{
		{"nil", nil, "", "internal error"},
		{"our own", New(NotFound, "session %s not found", "s1"), NotFound, "session s1 not found"},
		{"wrapped further", fmt.Errorf("reading: %w", Wrap(Unavailable, errors.New("dial tcp"), "memory is unavailable")), Unavailable, "memory is unavailable"},
		{"a deadline", fmt.Errorf("call: %w", context.DeadlineExceeded), Timeout, "the request took too long"},
		{"anything else hides its text", errors.New("nil pointer at x.go:12"), Internal, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := CodeOf(tt.err); got != tt.code {
				t.Errorf("CodeOf = %q; want %q", got, tt.code)
			}
			if tt.err != nil {
				if got := MessageOf(tt.err); got != tt.msg {
					t.Errorf("MessageOf = %q; want %q", got, tt.msg)
				}
			}
		})
	}
}

func TestWrapKeepsTheCause(t *testing.T) {
	t.Parallel()
	cause := errors.New("dial tcp 127.0.0.1:3500: refused")
	err := Wrap(Unavailable, cause, "chat-service is unavailable")
	if !errors.Is(err, cause) {
		t.Fatal("the cause is lost")
	}
	if MessageOf(err) != "chat-service is unavailable" {
		t.Fatalf("message %q leaks or loses", MessageOf(err))
	}
	if r := RetryAfterOf(&Error{Code: RateLimited, RetryAfter: 2 * time.Second}); r != 2*time.Second {
		t.Fatalf("RetryAfterOf = %s", r)
	}
}

// TestHTTPStatusRoundTrip: every code maps to a status that maps back to it,
// so an error crosses a service's HTTP answer with its code.
func TestHTTPStatusRoundTrip(t *testing.T) {
	t.Parallel()
	for _, c := range []Code{Invalid, TooLarge, NotFound, Conflict, Unauthenticated, Forbidden, RateLimited, Unavailable, Timeout, Internal} {
		if back := FromHTTPStatus(HTTPStatus(c)); back != c {
			t.Errorf("%s → %d → %s", c, HTTPStatus(c), back)
		}
	}
	if c := FromHTTPStatus(http.StatusUnprocessableEntity); c != Invalid {
		t.Errorf("422 → %s; want %s", c, Invalid)
	}
}
