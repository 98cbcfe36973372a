// Package logging builds the one slog logger of a process (JSON in
// production, text in development) and carries request-scoped attributes
// (request id, workflow instance id, CloudEvent id, trace id) in contexts.
package logging

import (
	"context"
	"io"
	"log/slog"
	"strings"
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
func With(ctx context.Context, base *slog.Logger, args ...any) context.Context {
	l := From(ctx, base).With(args...)
	return context.WithValue(ctx, ctxKey{}, l)
}

// From returns the logger stored in ctx, or base.
func From(ctx context.Context, base *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(ctxKey{}).(*slog.Logger); ok {
		return l
	}
	return base
}
