// Command chat is the Chat Service (Dapr app id chat-service): each chat
// turn runs as the Dapr Workflow chat_workflow (package turn); http.go is
// its HTTP API (internal/api: api.ChatService), owners.go the first lock of
// a session.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"github.com/dapr/durabletask-go/workflow"

	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/daprc"
	"github.com/daca-go/daca/internal/env"
	"github.com/daca-go/daca/internal/llm"
	"github.com/daca-go/daca/internal/service"
	"github.com/daca-go/daca/services/chat/approval"
	"github.com/daca-go/daca/services/chat/session"
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
	// warmupTimeout is WARMUP_TIMEOUT: how long the start waits for a
	// workflow to run before it shuts its sidecar down and exits (warmUp).
	warmupTimeout time.Duration
	// The agent's limits, given to every turn (turn.Input).
	maxSteps      int // AGENT_MAX_STEPS: rounds of the model per turn
	toolResultMax int // TOOL_RESULT_MAX: bytes of a tool result the model gets
	// toolTimeout is TOOL_TIMEOUT: how long an MCP tool call may take.
	toolTimeout time.Duration
	// toolsRefresh is TOOLS_REFRESH: a list of the MCP servers' tools older
	// than this is listed again (turn.Catalog.Refresh).
	toolsRefresh time.Duration
	// approvals: which tool calls wait for a user's decision
	// (TOOLS_AUTO_APPROVE, TOOLS_REQUIRE_APPROVAL) and for how long at most
	// (APPROVAL_TIMEOUT).
	policy          turn.Policy
	approvalTimeout time.Duration
	// tokenBudget is TOKEN_BUDGET_PER_DAY: tokens a user's LLM calls may
	// take in a UTC day before the user's turns are refused (0: no budget).
	tokenBudget int
}

func loadConfig() (config, error) {
	r := env.New()
	c := config{
		Common:          service.ReadCommon(r, 8010),
		chatTimeout:     r.Duration("CHAT_TIMEOUT", 60*time.Second),
		llm:             llm.ConfigFromEnv(r),
		daprHTTPPort:    r.Int("DAPR_HTTP_PORT", 3500, 1, 65535),
		daprToken:       r.String("DAPR_API_TOKEN", ""),
		failpoints:      r.String("FAILPOINTS_DIR", ""),
		warmupTimeout:   r.Duration("WARMUP_TIMEOUT", 110*time.Second),
		maxSteps:        r.Int("AGENT_MAX_STEPS", turn.DefaultMaxSteps, 1, 64),
		toolResultMax:   r.Int("TOOL_RESULT_MAX", turn.DefaultToolResultMax, 256, 1<<20),
		toolTimeout:     r.Duration("TOOL_TIMEOUT", turn.DefaultToolTimeout),
		toolsRefresh:    r.Duration("TOOLS_REFRESH", time.Minute),
		approvalTimeout: r.Duration("APPROVAL_TIMEOUT", turn.DefaultApprovalTimeout),
		tokenBudget:     r.Int("TOKEN_BUDGET_PER_DAY", 0, 0, 1<<40),
	}
	var errs []error
	if c.warmupTimeout < 5*time.Second || c.warmupTimeout > 110*time.Second {
		errs = append(errs, fmt.Errorf("WARMUP_TIMEOUT=%s: want 5s to 110s (the start-up has two minutes)", c.warmupTimeout))
	}
	if c.toolTimeout < 100*time.Millisecond || c.toolTimeout > time.Hour {
		errs = append(errs, fmt.Errorf("TOOL_TIMEOUT=%s: want 100ms to 1h", c.toolTimeout))
	}
	if c.approvalTimeout < time.Second || c.approvalTimeout > approval.MaxTimeout {
		errs = append(errs, fmt.Errorf("APPROVAL_TIMEOUT=%s: want 1s to %s", c.approvalTimeout, approval.MaxTimeout))
	}
	var err error
	if c.policy.AutoApprove, err = turn.ParsePatterns("TOOLS_AUTO_APPROVE", r.String("TOOLS_AUTO_APPROVE", "")); err != nil {
		errs = append(errs, err)
	}
	if c.policy.Require, err = turn.ParsePatterns("TOOLS_REQUIRE_APPROVAL", r.String("TOOLS_REQUIRE_APPROVAL", "")); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(append([]error{r.Err()}, errs...)...)
}

func main() {
	cfg, err := loadConfig()
	service.Main(appID, err, cfg.Port, "/health", func(ctx context.Context) error { return run(ctx, cfg) })
}

func run(ctx context.Context, cfg config) error {
	var s *srv
	st, err := service.Start(ctx, appID, cfg.Common, &cfg.llm, cfg.chatTimeout+5*time.Second, func(log *slog.Logger) http.Handler {
		s = newServer(log, cfg.AppToken, cfg.chatTimeout)
		s.limits = turn.Input{MaxSteps: cfg.maxSteps, ToolResultMax: cfg.toolResultMax, ToolTimeout: cfg.toolTimeout, ApprovalTimeout: cfg.approvalTimeout}
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
	if cfg.tokenBudget > 0 {
		s.budget = &budget{perDay: cfg.tokenBudget, usage: memory.Usage, now: time.Now, log: log}
	}
	// Every tool of every MCPServer of the sidecar (components/mcpserver-*.yaml),
	// listed through Dapr's ListTools workflows.
	runtime := runtimev1pb.NewDaprClient(dc.GrpcClientConn())
	tools := &turn.Catalog{Workflows: wf, Log: log, Refresh: cfg.toolsRefresh, Policy: cfg.policy, Servers: func(ctx context.Context) ([]string, error) {
		md, err := runtime.GetMetadata(daprc.Outgoing(ctx, cfg.daprToken), &runtimev1pb.GetMetadataRequest{})
		if err != nil {
			return nil, err
		}
		var names []string
		for _, m := range md.GetMcpServers() {
			names = append(names, m.GetName())
		}
		return names, nil
	}}
	approvals := &approval.Store{State: dc, Publisher: dc, Turns: wf, Log: log}
	acts := &turn.Activities{Memory: memory, Publisher: dc, Model: st.Model, State: dc, Tools: tools, Approvals: approvals,
		Sessions: session.Client{Invoker: dc, State: dc}, Stop: turn.Client{Workflows: wf, Log: log}.Stop, Log: log}
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
	// The worker starts once, here, and stops as soon as the shutdown
	// begins, beside the HTTP server's drain: the sidecar is told to stop at
	// the same time (a pod's containers are), and its graceful stop may wait
	// for the worker's stream to close; a worker kept open until the drain
	// ended would hold the sidecar (and the workflow actors it still runs)
	// that long. Activities still running when the worker stops are handed
	// back to Dapr, which runs them again, elsewhere or on restart.
	workerCtx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorker()
	go func() {
		select {
		case <-ctx.Done():
		case <-workerCtx.Done():
		}
		stopWorker()
	}()
	if err := wf.StartWorker(workerCtx, reg); err != nil {
		return fmt.Errorf("starting the workflow worker: %w", err)
	}
	if err := warmUp(st.Init, wf, dc, cfg.warmupTimeout, firesAt(cfg.failpoints, "warmup_stuck"), log); err != nil {
		return err
	}
	offered := tools.Ready(st.Init, 30*time.Second, 2*time.Second)
	// Each session's turns, one at a time (the session actors, hosted here).
	turns := turn.Client{Workflows: wf, State: dc, Log: log}
	s.actor.Sidecar, s.actor.Turns = dc, turns
	s.actor.Stopped = func(ctx context.Context, id string) {
		if err := approvals.EndTurn(ctx, id); err != nil {
			log.Warn("the interrupted turn's approval request stays pending until it expires", "workflow_instance_id", id, "err", err)
		}
	}
	s.ready(turns, newClaimCache(memoryOwners{memory}, claimTTL, maxClaims), tools, approvals, session.Client{Invoker: dc, State: dc}, dc, st.Model.Mode())
	log.Info("ready", "llm", st.Model.Mode(), "chat_timeout", cfg.chatTimeout.String(), "tools", len(offered), "agent_max_steps", cfg.maxSteps, "token_budget_per_day", cfg.tokenBudget)
	err = st.Wait()
	stopWorker()
	return err
}
