// Package service is what the chat and memory services share: the process
// skeleton (configuration errors, the `healthcheck` subcommand for
// containers, signals, exit codes), logging and tracing set-up, and the HTTP
// router with the middleware and the routes every service has (/, /health,
// /healthz, /metrics) around the service's own routes, which answer 503
// until the service is ready.
package service

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/go-chi/chi/v5"

	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/daprc"
	"github.com/daca-go/daca/internal/env"
	"github.com/daca-go/daca/internal/httpx"
	"github.com/daca-go/daca/internal/llm"
	"github.com/daca-go/daca/internal/logging"
	"github.com/daca-go/daca/internal/telemetry"
)

// Main runs a service process: an invalid configuration exits 2 with one
// message, `<binary> healthcheck` probes the running service on loopback,
// and run gets a context that ends on SIGINT or SIGTERM.
func Main(appID string, cfgErr error, port int, healthPath string, run func(context.Context) error) {
	if cfgErr != nil {
		fmt.Fprintf(os.Stderr, "%s: invalid configuration: %v\n", appID, cfgErr)
		os.Exit(2)
	}
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(Healthcheck(port, healthPath))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", appID, err)
		stop()
		os.Exit(1)
	}
}

// Observe makes the service's logger and starts tracing; call the returned
// function on the way out to flush spans.
func Observe(ctx context.Context, appID, format, level string) (*slog.Logger, func(), error) {
	log := logging.New(os.Stdout, format, level).With("app_id", appID)
	shutdown, err := telemetry.Setup(ctx, appID, log)
	if err != nil {
		return nil, nil, err
	}
	return log, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdown(sctx)
	}, nil
}

// Started is a service that Start has set up: it serves HTTP already (its
// routes answer 503 until the service calls SetReady), and has its logger,
// its sidecar client and its LLM (nil for a service without one).
type Started struct {
	Log   *slog.Logger
	Dapr  dapr.Client
	Model *llm.Client
	// Init bounds the rest of the start-up (2 minutes from Start).
	Init   context.Context
	errc   <-chan error
	closer []func()
}

// Start observes (logging, tracing), listens on c.Addr() and serves the
// handler that routes makes with the logger, at once; then it connects to
// the Dapr sidecar and sets up the LLM (its key from the secret store; none
// when llmCfg is nil). It
// returns when those are done; the caller finishes its own start-up, calls
// SetReady, then Wait. Close releases what Start holds.
func Start(ctx context.Context, appID string, c Common, llmCfg *llm.Config, grace time.Duration, routes func(*slog.Logger) http.Handler) (*Started, error) {
	log, stopTracing, err := Observe(ctx, appID, c.LogFormat, c.LogLevel)
	if err != nil {
		return nil, err
	}
	st := &Started{Log: log, closer: []func(){stopTracing}}
	ServePprof(c.PprofAddr, log)
	fail := func(err error) (*Started, error) {
		st.Close()
		return nil, err
	}
	ln, err := Listen(c.Addr())
	if err != nil {
		return fail(err)
	}
	errc := make(chan error, 1)
	h := routes(log)
	go func() { errc <- Serve(ctx, ln, h, grace, log) }()
	st.errc = errc
	initCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	st.Init = initCtx
	st.closer = append(st.closer, cancel)
	if st.Dapr, err = daprc.Connect(initCtx, log); err != nil {
		return fail(err)
	}
	st.closer = append(st.closer, st.Dapr.Close)
	if llmCfg == nil {
		return st, nil
	}
	if st.Model, err = llm.New(initCtx, *llmCfg, &llm.SecretKey{Client: st.Dapr, Log: log}, log); err != nil {
		return fail(err)
	}
	return st, nil
}

// Wait returns when the HTTP server has shut down (its context ended) or
// failed.
func (s *Started) Wait() error { return <-s.errc }

// Close releases the sidecar connection and flushes the spans.
func (s *Started) Close() {
	for i := len(s.closer) - 1; i >= 0; i-- {
		s.closer[i]()
	}
}

// Sidecar answers whether the Dapr sidecar is reachable.
type Sidecar interface {
	GetMetadata(ctx context.Context) (*dapr.GetMetadataResponse, error)
}

type readiness struct {
	sidecar Sidecar
	llm     string
}

// Base is the common part of a service's HTTP surface.
type Base struct {
	Welcome  string // message of GET /
	Log      *slog.Logger
	AppToken string // APP_API_TOKEN: only the sidecar may call the service's routes
	// Early mounts routes that answer before the service is ready (Dapr's
	// GET /dapr/config, which the sidecar reads when it first reaches the
	// app); nil: none.
	Early func(r chi.Router)
	// Actors mounts the routes of the app's actors (PUT
	// /actors/{type}/{id}/method/…), which Dapr calls once the sidecar has
	// taken in the actor types Early's /dapr/config announced — possibly
	// before the service is ready. They wait for the service to be ready
	// (at most ActorWait) instead of answering 503, which would fail the
	// caller's call although the actor is where it belongs.
	Actors func(r chi.Router)
	ready  atomic.Pointer[readiness]
	// readyCh is closed by SetReady.
	readyOnce sync.Once
	readyCh   chan struct{}
}

// ActorWait is how long an actor call waits for its service to get ready.
const ActorWait = 20 * time.Second

func (b *Base) readyChan() chan struct{} {
	b.readyOnce.Do(func() { b.readyCh = make(chan struct{}) })
	return b.readyCh
}

// SetReady marks the service ready; /health then reports the sidecar and
// the LLM mode.
func (b *Base) SetReady(sidecar Sidecar, llmMode string) {
	if b.ready.Swap(&readiness{sidecar: sidecar, llm: llmMode}) == nil {
		close(b.readyChan())
	}
}

// Router returns the service's router: the shared middleware (tracing,
// request id, logging, metrics, app token) and routes, with mount's routes
// answering 503 "starting" until SetReady.
func (b *Base) Router(mount func(r chi.Router)) http.Handler {
	r := chi.NewRouter()
	r.Use(telemetry.Middleware(httpx.IsProbe), httpx.RequestID(b.Log), httpx.Log(b.Log), metricsMiddleware, httpx.AppToken(b.AppToken))
	r.Get("/", func(w http.ResponseWriter, r *http.Request) {
		httpx.JSON(w, http.StatusOK, map[string]string{"message": b.Welcome})
	})
	r.Method(api.Health.Verb, api.Health.Pattern, http.HandlerFunc(b.health))
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) { // live: the process answers
		httpx.JSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Handle("/metrics", metricsHandler())
	if b.Early != nil {
		b.Early(r)
	}
	if b.Actors != nil {
		r.Group(func(r chi.Router) {
			r.Use(b.awaitReady)
			b.Actors(r)
		})
	}
	r.Group(func(r chi.Router) {
		r.Use(b.requireReady)
		mount(r)
	})
	return r
}

// awaitReady holds a request until the service is ready (at most
// ActorWait, or until the caller gives up), then serves it; 503 "starting"
// when it is still not ready.
func (b *Base) awaitReady(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.ready.Load() == nil {
			t := time.NewTimer(ActorWait)
			defer t.Stop()
			select {
			case <-b.readyChan():
			case <-t.C:
			case <-r.Context().Done():
			}
		}
		b.requireReady(next).ServeHTTP(w, r)
	})
}

func (b *Base) requireReady(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.ready.Load() == nil {
			w.Header().Set("Retry-After", "1")
			httpx.Error(w, r, b.Log, apperr.New(apperr.Unavailable, "the service is starting"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// health answers {status, dapr, llm}: 200 when the sidecar answers.
func (b *Base) health(w http.ResponseWriter, r *http.Request) {
	rd := b.ready.Load()
	if rd == nil {
		httpx.JSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting", "dapr": "connecting", "llm": "unknown"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	daprState, status, code := "ok", "ok", http.StatusOK
	if _, err := rd.sidecar.GetMetadata(ctx); err != nil {
		daprState, status, code = "unavailable", "degraded", http.StatusServiceUnavailable
	}
	httpx.JSON(w, code, map[string]string{"status": status, "dapr": daprState, "llm": rd.llm})
}

// Common is the configuration every app reads from its environment.
type Common struct {
	Port      int    // APP_PORT
	Host      string // APP_HOST (127.0.0.1; 0.0.0.0 in containers)
	LogFormat string // LOG_FORMAT: json or text
	LogLevel  string // LOG_LEVEL
	AppToken  string // APP_API_TOKEN: only the sidecar may call the app
	PprofAddr string // PPROF_ADDR: net/http/pprof on this address (operators; bind it to loopback); "": off
}

// ReadCommon reads the common configuration; defPort is the app's port.
func ReadCommon(r *env.Reader, defPort int) Common {
	return Common{
		Port:      r.Int("APP_PORT", defPort, 1, 65535),
		Host:      r.String("APP_HOST", "127.0.0.1"),
		LogFormat: r.String("LOG_FORMAT", "json"),
		LogLevel:  r.String("LOG_LEVEL", "info"),
		AppToken:  r.String("APP_API_TOKEN", ""),
		PprofAddr: r.String("PPROF_ADDR", ""),
	}
}

// ServePprof serves net/http/pprof on addr until the process ends; "" does
// nothing.
func ServePprof(addr string, log *slog.Logger) {
	if addr == "" {
		return
	}
	go func() {
		log.Info("pprof listening", "addr", addr)
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		if err := http.ListenAndServe(addr, mux); err != nil {
			log.Warn("pprof stopped", "addr", addr, "err", err)
		}
	}()
}

// Addr is the address the app listens on.
func (c Common) Addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }
