// Package testkit holds the small helpers every test package uses: a quiet
// logger, waiting on a condition with a deadline (never a sleep), and a
// GraphQL websocket client.
package testkit

import (
	"errors"
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
