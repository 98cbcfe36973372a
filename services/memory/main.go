// Command memory is the Agent Memory Service (Dapr app id
// agent-memory-service): user profiles and conversation history in the Dapr
// state store, fed by the `conversations` topic.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/daca-go/daca/internal/daprc"
	"github.com/daca-go/daca/internal/env"
	"github.com/daca-go/daca/internal/llm"
	"github.com/daca-go/daca/internal/logging"
	"github.com/daca-go/daca/internal/memory"
	"github.com/daca-go/daca/internal/server"
	"github.com/daca-go/daca/internal/telemetry"
)

type config struct {
	port                    int
	host                    string
	logFormat, logLevel     string
	appToken                string
	historyCap, summaryLast int
	llm                     llm.Config
}

func loadConfig() (config, error) {
	r := env.New()
	c := config{
		port:        r.Int("APP_PORT", 8001, 1, 65535),
		host:        r.String("APP_HOST", "127.0.0.1"),
		logFormat:   r.String("LOG_FORMAT", "json"),
		logLevel:    r.String("LOG_LEVEL", "info"),
		appToken:    r.String("APP_API_TOKEN", ""),
		historyCap:  r.Int("HISTORY_CAP", 200, 2, 100000),
		summaryLast: r.Int("SUMMARY_LAST", 10, 1, 1000),
		llm:         llm.ConfigFromEnv(r),
	}
	return c, r.Err()
}

func main() {
	cfg, err := loadConfig()
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(server.Healthcheck(cfg.port, "/health"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent-memory-service: invalid configuration:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "agent-memory-service:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) error {
	log := logging.New(os.Stdout, cfg.logFormat, cfg.logLevel).With("app_id", "agent-memory-service")
	shutdownTracing, err := telemetry.Setup(ctx, "agent-memory-service", log)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdownTracing(sctx)
	}()
	ln, err := server.Listen(net.JoinHostPort(cfg.host, strconv.Itoa(cfg.port)))
	if err != nil {
		return err
	}
	srv := newServer(log, cfg.appToken)
	// Serve at once (health says "starting"); connect to Dapr meanwhile.
	errc := make(chan error, 1)
	go func() { errc <- server.Serve(ctx, ln, srv.routes(), 15*time.Second, log) }()

	initCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	dc, err := daprc.Connect(initCtx, log)
	if err != nil {
		return err
	}
	defer dc.Close()
	model, err := llm.New(initCtx, cfg.llm, &llm.SecretKey{Client: dc, Log: log}, log)
	if err != nil {
		return err
	}
	mem := memory.New(dc, memory.Config{HistoryCap: cfg.historyCap, SummaryLast: cfg.summaryLast}, log)
	srv.ready(mem, dc, model)
	log.Info("ready", "llm", model.Mode(), "history_cap", cfg.historyCap, "summary_last", cfg.summaryLast)
	return <-errc
}
