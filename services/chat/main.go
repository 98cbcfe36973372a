// Command chat is the Chat Service (Dapr app id chat-service): each chat
// turn runs as the Dapr Workflow chat_workflow (see internal/chat).
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

	"github.com/dapr/durabletask-go/workflow"

	"github.com/daca-go/daca/internal/chat"
	"github.com/daca-go/daca/internal/daprc"
	"github.com/daca-go/daca/internal/env"
	"github.com/daca-go/daca/internal/llm"
	"github.com/daca-go/daca/internal/logging"
	"github.com/daca-go/daca/internal/server"
	"github.com/daca-go/daca/internal/telemetry"
)

type config struct {
	port                int
	host                string
	logFormat, logLevel string
	appToken            string
	chatTimeout         time.Duration
	llm                 llm.Config
}

func loadConfig() (config, error) {
	r := env.New()
	c := config{
		port:        r.Int("APP_PORT", 8010, 1, 65535),
		host:        r.String("APP_HOST", "127.0.0.1"),
		logFormat:   r.String("LOG_FORMAT", "json"),
		logLevel:    r.String("LOG_LEVEL", "info"),
		appToken:    r.String("APP_API_TOKEN", ""),
		chatTimeout: r.Duration("CHAT_TIMEOUT", 60*time.Second),
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
		fmt.Fprintln(os.Stderr, "chat-service: invalid configuration:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "chat-service:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) error {
	log := logging.New(os.Stdout, cfg.logFormat, cfg.logLevel).With("app_id", "chat-service")
	shutdownTracing, err := telemetry.Setup(ctx, "chat-service", log)
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
	s := &srv{log: log, appToken: cfg.appToken, chatTimeout: cfg.chatTimeout}
	errc := make(chan error, 1)
	go func() { errc <- server.Serve(ctx, ln, s.routes(), cfg.chatTimeout+5*time.Second, log) }()

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
	wf := workflow.NewClient(dc.GrpcClientConn())
	reg := workflow.NewRegistry()
	acts := &chat.Activities{Invoker: dc, Publisher: dc, Model: model, Log: log}
	if err := acts.Register(reg); err != nil {
		return err
	}
	if err := chat.RegisterWarmup(reg); err != nil {
		return err
	}
	// The worker starts once, here, and runs until shutdown. On shutdown the
	// HTTP server drains first; activities still running when the worker
	// stops are handed back to Dapr, which runs them again on restart.
	workerCtx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorker()
	if err := wf.StartWorker(workerCtx, reg); err != nil {
		return fmt.Errorf("starting the workflow worker: %w", err)
	}
	if err := chat.Warmup(initCtx, wf, 10*time.Second, log); err != nil {
		return err
	}
	s.d.Store(&deps{wf: wf, sidecar: dc, llmMode: model.Mode()})
	log.Info("ready", "llm", model.Mode(), "chat_timeout", cfg.chatTimeout.String())
	err = <-errc
	stopWorker()
	return err
}
