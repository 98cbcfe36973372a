// metricsMiddleware and /metrics: a service's Prometheus metrics — requests,
// errors and latency per route (chi's route pattern, so ids in paths do not
// multiply the series), plus what other packages register with promauto on
// the default registry (LLM calls and tokens, workflow outcomes, pub/sub
// events by status).

package service

import (
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/daca-go/daca/internal/httpx"
)

var (
	requests = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "daca_http_requests_total", Help: "HTTP requests by route, method and status.",
	}, []string{"route", "method", "status"})
	duration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name: "daca_http_request_duration_seconds", Help: "HTTP request latency by route and method.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"route", "method"})
)

// metricsMiddleware records every request under its route pattern. Use it inside
// the chi router (r.Use) so the pattern is known.
func metricsMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if httpx.IsProbe(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		rec := httpx.NewStatusWriter(w)
		next.ServeHTTP(rec, r)
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		status := rec.Status()
		if status == 0 {
			status = http.StatusOK
		}
		requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
		duration.WithLabelValues(route, r.Method).Observe(time.Since(start).Seconds())
	})
}

// metricsHandler serves the default registry (Go runtime and process metrics included).
func metricsHandler() http.Handler { return promhttp.Handler() }
