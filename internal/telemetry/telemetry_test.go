package telemetry

import (
	"context"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestStart(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	shutdown, err := Setup(context.Background(), "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	remote := func(flags trace.TraceFlags) context.Context {
		sc := trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: flags, Remote: true,
		})
		return trace.ContextWithRemoteSpanContext(context.Background(), sc)
	}
	tests := []struct {
		name      string
		ctx       context.Context
		newSpan   bool // a span of its own (another span id than the parent's)
		recording bool
	}{
		{"no parent: a root span, not sampled", context.Background(), true, false},
		{"unsampled parent: the parent serves", remote(0), false, false},
		{"sampled parent: a recorded child", remote(trace.FlagsSampled), true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := trace.SpanContextFromContext(tt.ctx)
			ctx, span := Start(tt.ctx, "op")
			defer span.End()
			sc := span.SpanContext()
			if !sc.IsValid() || TraceID(ctx) != sc.TraceID().String() {
				t.Fatalf("span context %v, trace id in ctx %q", sc, TraceID(ctx))
			}
			if parent.IsValid() && sc.TraceID() != parent.TraceID() {
				t.Errorf("trace id %s, want the parent's %s", sc.TraceID(), parent.TraceID())
			}
			if got := sc.SpanID() != parent.SpanID(); got != tt.newSpan {
				t.Errorf("span of its own: %v, want %v", got, tt.newSpan)
			}
			if span.IsRecording() != tt.recording {
				t.Errorf("recording %v, want %v", span.IsRecording(), tt.recording)
			}
		})
	}
}
