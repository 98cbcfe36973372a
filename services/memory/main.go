// Command memory is the Agent Memory Service (Dapr app id
// agent-memory-service): user profiles and conversation history in the Dapr
// state store, fed by the `conversations` topic.
package main

import (
	"context"
	"time"

	"github.com/daca-go/daca/internal/daprc"
	"github.com/daca-go/daca/internal/env"
	"github.com/daca-go/daca/internal/llm"
	"github.com/daca-go/daca/internal/memory"
	"github.com/daca-go/daca/internal/server"
	"github.com/daca-go/daca/internal/service"
)

const appID = "agent-memory-service"

type config struct {
	service.Common
	historyCap, summaryLast int
	llm                     llm.Config
}

func loadConfig() (config, error) {
	r := env.New()
	c := config{
		Common:      service.ReadCommon(r, 8001),
		historyCap:  r.Int("HISTORY_CAP", 200, 2, 100000),
		summaryLast: r.Int("SUMMARY_LAST", 10, 1, 1000),
		llm:         llm.ConfigFromEnv(r),
	}
	return c, r.Err()
}

func main() {
	cfg, err := loadConfig()
	service.Main(appID, err, cfg.Port, "/health", func(ctx context.Context) error { return run(ctx, cfg) })
}

func run(ctx context.Context, cfg config) error {
	log, stopTracing, err := service.Observe(ctx, appID, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	defer stopTracing()
	ln, err := server.Listen(cfg.Addr())
	if err != nil {
		return err
	}
	srv := newServer(log, cfg.AppToken)
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
