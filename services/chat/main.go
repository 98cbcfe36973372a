// Command chat is the Chat Service (Dapr app id chat-service): each chat
// turn runs as the Dapr Workflow chat_workflow (package turn); http.go is
// its HTTP API (internal/api: api.ChatService), owners.go the first lock of
// a session.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/dapr/durabletask-go/workflow"

	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/daprc"
	"github.com/daca-go/daca/internal/env"
	"github.com/daca-go/daca/internal/llm"
	"github.com/daca-go/daca/internal/service"
	"github.com/daca-go/daca/services/chat/turn"
)

const appID = contract.ChatApp

type config struct {
	service.Common
	chatTimeout  time.Duration
	llm          llm.Config
	daprHTTPPort int    // DAPR_HTTP_PORT: the sidecar's HTTP API (session owners)
	daprToken    string // DAPR_API_TOKEN
	// failpoints is FAILPOINTS_DIR: for the fault suite only. A file
	// <dir>/<name>.armed there makes the process kill itself (SIGKILL) the
	// next time a turn reaches failpoint <name>, once. Unset in production.
	failpoints string
}

func loadConfig() (config, error) {
	r := env.New()
	c := config{
		Common:       service.ReadCommon(r, 8010),
		chatTimeout:  r.Duration("CHAT_TIMEOUT", 60*time.Second),
		llm:          llm.ConfigFromEnv(r),
		daprHTTPPort: r.Int("DAPR_HTTP_PORT", 3500, 1, 65535),
		daprToken:    r.String("DAPR_API_TOKEN", ""),
		failpoints:   r.String("FAILPOINTS_DIR", ""),
	}
	return c, r.Err()
}

func main() {
	cfg, err := loadConfig()
	service.Main(appID, err, cfg.Port, "/health", func(ctx context.Context) error { return run(ctx, cfg) })
}

func run(ctx context.Context, cfg config) error {
	var s *srv
	st, err := service.Start(ctx, appID, cfg.Common, &cfg.llm, cfg.chatTimeout+5*time.Second, func(log *slog.Logger) http.Handler {
		s = newServer(log, cfg.AppToken, cfg.chatTimeout)
		return s.routes()
	})
	if err != nil {
		return err
	}
	defer st.Close()
	log, dc := st.Log, st.Dapr
	wf := workflow.NewClient(dc.GrpcClientConn())
	reg := workflow.NewRegistry()
	memory := api.Memory{Caller: daprc.NewHTTP(cfg.daprHTTPPort, cfg.daprToken)}
	acts := &turn.Activities{Memory: memory, Publisher: dc, Model: st.Model, State: dc, Log: log}
	if cfg.failpoints != "" {
		log.Warn("FAILPOINTS_DIR is set: this process crashes itself at armed failpoints (fault tests only)", "dir", cfg.failpoints)
		acts.Failpoint = crashAt(cfg.failpoints)
	}
	if err := acts.Register(reg); err != nil {
		return err
	}
	if err := turn.RegisterWarmup(reg); err != nil {
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
	if err := turn.Warmup(st.Init, wf, 10*time.Second, log); err != nil {
		return err
	}
	s.ready(wf, newClaimCache(memoryOwners{memory}, claimTTL, maxClaims), dc, st.Model.Mode())
	log.Info("ready", "llm", st.Model.Mode(), "chat_timeout", cfg.chatTimeout.String())
	err = st.Wait()
	stopWorker()
	return err
}
