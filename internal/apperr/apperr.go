// Package apperr is the one error type of the project: an error code, a
// message that is safe to show to a client, and the internal cause, which is
// logged and never returned. Services map codes to HTTP status here; the
// gateway maps them to GraphQL extensions.code.
package apperr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Code classifies an error.
type Code string

const (
	Invalid         Code = "invalid"         // bad input: 400
	TooLarge        Code = "too_large"       // body or field too large: 413
	NotFound        Code = "not_found"       // 404
	Conflict        Code = "conflict"        // 409
	Unauthenticated Code = "unauthenticated" // 401
	Forbidden       Code = "forbidden"       // 403
	RateLimited     Code = "rate_limited"    // 429
	// ResourceExhausted: a quota is used up until it resets (the daily
	// token budget): 429, with RetryAfter until the reset.
	ResourceExhausted Code = "resource_exhausted"
	Unavailable       Code = "unavailable" // a dependency is down: 503
	Timeout           Code = "timeout"     // took too long: 504
	Internal          Code = "internal"    // a bug: 500
)

// Error is an error with a code and a client-safe message.
type Error struct {
	Code       Code
	Message    string        // safe to return to clients
	Err        error         // internal cause; logged, never returned
	RetryAfter time.Duration // for RateLimited and Unavailable, when known
	// ResetsAt is when a used-up quota resets (ResourceExhausted).
	ResetsAt time.Time
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an error with a code and a client-safe message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an error with a code, a client-safe message and an internal cause.
func Wrap(code Code, err error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}

// CodeOf returns the code of err: its own, Timeout for a deadline, Internal
// for anything else.
func CodeOf(err error) Code {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, context.DeadlineExceeded):
		return Timeout
	default:
		return Internal
	}
}

// MessageOf returns the client-safe message of err.
func MessageOf(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Message != "" {
		return e.Message
	}
	switch CodeOf(err) {
	case Timeout:
		return "the request took too long"
	default:
		return "internal error"
	}
}

// RetryAfterOf returns the retry hint of err, if any.
func RetryAfterOf(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// HTTPStatus maps a code to an HTTP status.
func HTTPStatus(c Code) int {
	switch c {
	case Invalid:
		return http.StatusBadRequest
	case TooLarge:
		return http.StatusRequestEntityTooLarge
	case NotFound:
		return http.StatusNotFound
	case Conflict:
		return http.StatusConflict
	case Unauthenticated:
		return http.StatusUnauthorized
	case Forbidden:
		return http.StatusForbidden
	case RateLimited, ResourceExhausted:
		return http.StatusTooManyRequests
	case Unavailable:
		return http.StatusServiceUnavailable
	case Timeout:
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}

// FromHTTPStatus maps an HTTP status (of a backend) back to a code.
func FromHTTPStatus(status int) Code {
	switch status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return Invalid
	case http.StatusRequestEntityTooLarge:
		return TooLarge
	case http.StatusNotFound:
		return NotFound
	case http.StatusConflict:
		return Conflict
	case http.StatusUnauthorized:
		return Unauthenticated
	case http.StatusForbidden:
		return Forbidden
	case http.StatusTooManyRequests:
		return RateLimited
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return Unavailable
	case http.StatusGatewayTimeout:
		return Timeout
	default:
		return Internal
	}
}
