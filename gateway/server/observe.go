package server

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vektah/gqlparser/v2/ast"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/daca-go/daca/graph"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/telemetry"
)

// observer is the gateway's Prometheus registry and the gqlgen extension
// that feeds it and traces every operation (one span each): requests, errors (by extensions.code) and latency per operation
// (labelled by the operation's first root field, which the schema bounds),
// open subscriptions, events fanned out and slow subscribers dropped.
type observer struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

var (
	_ graphql.HandlerExtension     = (*observer)(nil)
	_ graphql.OperationInterceptor = (*observer)(nil)
	_ graphql.ResponseInterceptor  = (*observer)(nil)
)

func newObserver(runs *graph.RunWatch, live Live, fallbacks func() int64) *observer {
	m := &observer{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "daca_gateway_graphql_requests_total", Help: "GraphQL operations, by root field and type.",
		}, []string{"operation", "type"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "daca_gateway_graphql_errors_total", Help: "GraphQL errors, by root field and extensions.code.",
		}, []string{"operation", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "daca_gateway_graphql_duration_seconds", Help: "Latency of queries and mutations, by root field.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"operation", "type"}),
	}
	m.reg.MustRegister(m.requests, m.errors, m.duration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if runs != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "daca_gateway_followed_turns",
			Help: "Chat turns read from chat-service for chatRun subscribers (one reader per turn)."},
			func() float64 { return float64(runs.Polling()) }))
	}
	if fallbacks != nil {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "daca_gateway_turn_limit_fallbacks_total",
			Help: "Chat turns counted by this replica's own limit because the shared limit's state store failed."},
			func() float64 { return float64(fallbacks()) }))
	}
	if live != nil {
		m.reg.MustRegister(liveCollectors(live)...)
	}
	return m
}

// liveCollectors report the pub/sub side: open subscriptions per topic,
// events fanned out and slow subscribers dropped (conversations and memory
// updates), and the turns whose replies are kept for chatStream.
func liveCollectors(live Live) []prometheus.Collector {
	var cs []prometheus.Collector
	for _, topic := range contract.Topics {
		labels := prometheus.Labels{"topic": topic}
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "daca_gateway_open_subscriptions",
			Help: "Open GraphQL subscriptions fed by pub/sub.", ConstLabels: labels},
			func() float64 { n, _, _ := live.Topic(topic); return float64(n) }))
		if topic == contract.TopicChatStream {
			continue
		}
		cs = append(cs,
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "daca_gateway_events_fanned_out_total",
				Help: "Events delivered to subscribers.", ConstLabels: labels},
				func() float64 { _, d, _ := live.Topic(topic); return float64(d) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "daca_gateway_subscribers_dropped_total",
				Help: "Subscribers dropped for being too slow.", ConstLabels: labels},
				func() float64 { _, _, x := live.Topic(topic); return float64(x) }))
	}
	return append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "daca_gateway_streamed_turns",
		Help: "Chat turns whose reply this replica keeps for chatStream (while they run, and a minute after)."},
		func() float64 { return float64(live.StreamedTurns()) }))
}

func (m *observer) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

func (m *observer) ExtensionName() string                   { return "Observer" }
func (m *observer) Validate(graphql.ExecutableSchema) error { return nil }

func operation(ctx context.Context) (name, typ string) {
	if !graphql.HasOperationContext(ctx) {
		return "invalid", "unknown"
	}
	oc := graphql.GetOperationContext(ctx)
	if oc.Operation == nil {
		return "invalid", "unknown"
	}
	name = "unknown"
	for _, sel := range oc.Operation.SelectionSet {
		if f, ok := sel.(*ast.Field); ok {
			name = f.Name
			break
		}
	}
	return name, string(oc.Operation.Operation)
}

// InterceptOperation counts the operation and traces it: one span per
// operation, ended with its (first) response. A subscription's span covers
// only its start, and is not the parent of what it does later: an idle
// subscription holds no open span (memory per subscription).
func (m *observer) InterceptOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	name, typ := operation(ctx)
	m.requests.WithLabelValues(name, typ).Inc()
	attrs := []attribute.KeyValue{attribute.String("graphql.operation.type", typ), attribute.String("graphql.operation.name", name)}
	if typ == string(ast.Subscription) {
		_, span := telemetry.Start(ctx, "graphql "+typ+" "+name, attrs...)
		rh := next(ctx)
		span.End()
		return rh
	}
	ctx, span := telemetry.Start(ctx, "graphql "+typ+" "+name, attrs...)
	rh := next(ctx)
	var once sync.Once
	return func(ctx context.Context) *graphql.Response {
		resp := rh(ctx)
		once.Do(func() {
			if resp != nil && len(resp.Errors) > 0 {
				span.SetStatus(codes.Error, resp.Errors[0].Message)
			}
			span.End()
		})
		return resp
	}
}

func (m *observer) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	start := time.Now()
	resp := next(ctx)
	name, typ := operation(ctx)
	if typ != string(ast.Subscription) {
		m.duration.WithLabelValues(name, typ).Observe(time.Since(start).Seconds())
	}
	if resp != nil {
		for _, e := range resp.Errors {
			code := "INTERNAL"
			if c, ok := e.Extensions["code"]; ok {
				code = fmt.Sprint(c)
			}
			m.errors.WithLabelValues(name, code).Inc()
		}
	}
	return resp
}
