// Package logging builds the one slog logger of a process (JSON in
// production, text in development) and carries request-scoped attributes
// (request id, workflow instance id, CloudEvent id, trace id) in contexts.
package logging

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// New returns a logger writing to w. format is "json" (default) or "text";
// level is debug, info (default), warn or error.
func New(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	if strings.EqualFold(format, "text") {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h)
}

type ctxKey struct{}

// With returns a context whose logger (see From) carries the attributes.
// The logger is built on its first use: most requests never log a line,
// and slog's With formats the attributes ahead (a measurable share of the
// gateway's CPU per request when it ran on every request).
func With(ctx context.Context, base *slog.Logger, args ...any) context.Context {
	return context.WithValue(ctx, ctxKey{}, &scoped{parent: ctx, base: base, args: args})
}

// scoped is a logger of With, built once on first use.
type scoped struct {
	parent context.Context // the context With was called on: its logger is the parent
	base   *slog.Logger
	args   []any
	once   sync.Once
	l      *slog.Logger
}

func (s *scoped) logger() *slog.Logger {
	s.once.Do(func() {
		s.l = From(s.parent, s.base).With(s.args...)
		s.parent = nil // the logger is built: let the parent context go
	})
	return s.l
}

// From returns the logger stored in ctx, or base.
func From(ctx context.Context, base *slog.Logger) *slog.Logger {
	if s, ok := ctx.Value(ctxKey{}).(*scoped); ok {
		return s.logger()
	}
	return base
}
