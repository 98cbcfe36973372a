// Package telemetry sets up OpenTelemetry tracing for a service and carries
// W3C trace context across every hop: incoming HTTP (from the Dapr sidecar or
// a client), outgoing gRPC to the sidecar (service invocation, publish),
// and into workflow activities (a carrier in the workflow's input, which is
// data and so keeps the workflow deterministic).
//
// Spans are exported with OTLP over HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; otherwise nothing is exported
// but trace ids are still made and propagated, so logs and Dapr's own spans
// line up.
package telemetry

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

const instrumentation = "github.com/daca-go/daca"

// Setup installs the tracer provider and the W3C propagator for service.
// The returned function flushes and stops the exporter.
func Setup(ctx context.Context, service string, log *slog.Logger) (func(context.Context) error, error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	res := resource.NewSchemaless(semconv.ServiceName(service))
	// Without an exporter nothing would ever read a span: spans still get
	// their trace and span ids (in every log line, and propagated to Dapr as
	// W3C traceparent), but are not recorded, which costs the gateway a few
	// per cent of its CPU per request and its sidecar the recording of its
	// own spans. A caller's sampled traceparent is still honoured.
	sampler := sdktrace.ParentBased(sdktrace.NeverSample())
	var opts []sdktrace.TracerProviderOption
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, err
		}
		sampler = sdktrace.ParentBased(sdktrace.AlwaysSample())
		opts = append(opts, sdktrace.WithBatcher(exp))
		log.Info("tracing: exporting spans with OTLP/HTTP")
	}
	opts = append(opts, sdktrace.WithResource(res), sdktrace.WithSampler(sampler))
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	t := tp.Tracer(instrumentation)
	tracer.Store(&t)
	return tp.Shutdown, nil
}

// tracer is the tracer of the provider Setup installed last.
var tracer atomic.Pointer[trace.Tracer]

// Tracer returns the project's tracer (looked up in the global provider,
// which costs a lock and a map, only before Setup).
func Tracer() trace.Tracer {
	if t := tracer.Load(); t != nil {
		return *t
	}
	return otel.Tracer(instrumentation)
}

// Start starts a span as a child of the span in ctx. A child of a span
// that is not sampled is not made: with Setup's samplers (parent-based) it
// would not be sampled either, and an unrecorded span only carries its
// parent's trace id, so the parent is returned (its End does nothing).
func Start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if p := trace.SpanFromContext(ctx); unsampled(p) {
		return ctx, p
	}
	return Tracer().Start(ctx, name, trace.WithAttributes(attrs...))
}

func unsampled(s trace.Span) bool {
	sc := s.SpanContext()
	return sc.IsValid() && !sc.IsSampled() && !s.IsRecording()
}

// TraceID returns the trace id of ctx, or "".
func TraceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}

// Carrier returns the trace context of ctx as a map (for workflow inputs).
func Carrier(ctx context.Context) map[string]string {
	c := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, c)
	if len(c) == 0 {
		return nil
	}
	return c
}

// FromCarrier returns ctx continuing the trace context in c.
func FromCarrier(ctx context.Context, c map[string]string) context.Context {
	if len(c) == 0 {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier(c))
}

// Middleware starts a server span per request, continuing the caller's
// trace (traceparent header); requests for which skip says true (health
// probes) are not traced.
func Middleware(skip func(path string) bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return traced(skip, next)
	}
}

func traced(skip func(string) bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if skip != nil && skip(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := Tracer().Start(ctx, r.Method+" "+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(semconv.HTTPRequestMethodKey.String(r.Method), semconv.URLPath(r.URL.Path)))
		defer span.End()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}
