// Command memory is the Agent Memory Service (Dapr app id
// agent-memory-service): user profiles and conversation history in the Dapr
// state store, fed by the `conversations` topic.
package main

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/env"
	"github.com/daca-go/daca/internal/llm"
	"github.com/daca-go/daca/internal/service"
	"github.com/daca-go/daca/services/memory/store"
)

const appID = contract.MemoryApp

type config struct {
	service.Common
	historyCap, summaryLast int
	llm                     llm.Config
	// debounce (SUMMARY_DEBOUNCE) and every (SUMMARY_EVERY): when a user's
	// summary is made (summaries.go).
	debounce time.Duration
	every    int
}

func loadConfig() (config, error) {
	r := env.New()
	c := config{
		Common:      service.ReadCommon(r, 8001),
		historyCap:  r.Int("HISTORY_CAP", 200, 2, 100000),
		summaryLast: r.Int("SUMMARY_LAST", 10, 1, 1000),
		debounce:    r.Duration("SUMMARY_DEBOUNCE", 3*time.Second),
		every:       r.Int("SUMMARY_EVERY", 5, 1, 1000),
		llm:         llm.ConfigFromEnv(r),
	}
	return c, r.Err()
}

func main() {
	cfg, err := loadConfig()
	service.Main(appID, err, cfg.Port, "/health", func(ctx context.Context) error { return run(ctx, cfg) })
}

func run(ctx context.Context, cfg config) error {
	var srv *srv
	// Serve at once (health says "starting"); connect to Dapr meanwhile.
	st, err := service.Start(ctx, appID, cfg.Common, &cfg.llm, 15*time.Second, func(log *slog.Logger) http.Handler {
		srv = newServer(log, cfg.AppToken)
		return srv.routes()
	})
	if err != nil {
		return err
	}
	defer st.Close()
	every := cfg.every
	if cfg.debounce == 0 { // no debounce: the summary at every turn, as the tutorial's
		every = 1
	}
	mem := store.New(st.Dapr, store.Config{HistoryCap: cfg.historyCap, SummaryLast: cfg.summaryLast, SummaryEvery: every, SummaryDebounce: cfg.debounce,
		Retried: func(doc string) { casRetries.WithLabelValues(doc).Inc() }}, st.Log)
	srv.debounce = cfg.debounce
	srv.ready(mem, st.Dapr, st.Model, st.Dapr)
	st.Log.Info("ready", "llm", st.Model.Mode(), "history_cap", cfg.historyCap, "summary_last", cfg.summaryLast,
		"summary_debounce", cfg.debounce.String(), "summary_every", every)
	return st.Wait()
}
