// Package testkit holds the small helpers every test package uses: a quiet
// logger, waiting on a condition with a deadline (never a sleep), and a
// GraphQL websocket client.
package testkit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"
)

// Quiet is a logger that discards everything.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// WaitFor polls cond until it returns nil or the timeout passes, then fails
// the test with the last error. Use it instead of sleeps.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	poll := 5 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(poll)
		if poll < 100*time.Millisecond {
			poll *= 2
		}
	}
}

// Eventually polls cond as WaitFor does until it holds or the timeout
// passes, and reports whether it held: for a caller that records a
// condition that never came rather than failing at once.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for poll := 5 * time.Millisecond; ; {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(poll)
		if poll < 100*time.Millisecond {
			poll *= 2
		}
	}
}

// WaitUntil is WaitFor with a boolean condition.
func WaitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitFor(t, timeout, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

var errNotYet = errors.New("condition not met")

// FirstError is the first error of a GraphQL response's "errors" (raw
// JSON): its extensions.code, its extensions and its message; empty when
// there is none.
func FirstError(errs json.RawMessage) (code string, ext map[string]any, message string) {
	var list []struct {
		Message    string         `json:"message"`
		Extensions map[string]any `json:"extensions"`
	}
	if json.Unmarshal(errs, &list) != nil || len(list) == 0 {
		return "", nil, ""
	}
	e := list[0]
	if c, ok := e.Extensions["code"]; ok {
		code = fmt.Sprint(c)
	}
	return code, e.Extensions, e.Message
}
