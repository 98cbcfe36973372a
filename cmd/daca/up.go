package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stack"
)

// upConfig is what `daca up` runs: flags over environment over defaults.
type upConfig struct {
	root, runDir, redisAddr, logLevel string
	broker                            string // stack.BrokerRedis or stack.BrokerRabbitMQ
	redisPort, placement, scheduler   int
	llmMaxConcurrent                  int // LLM_MAX_CONCURRENT: generate_response activities at once (0: no limit)
	secure                            bool
	readyTimeout                      time.Duration
	apps                              []stack.Def // stack.System with the chosen ports
}

// up runs the whole system until ctx ends (Ctrl-C): it parses its
// configuration, makes sure secrets.json exists, starts the stack (which
// builds the Dapr binaries and the apps), prints where everything is, and
// stops everything at the end.
func up(ctx context.Context, args []string) error {
	cfg, err := parseUp(args)
	if err != nil || cfg == nil {
		return err
	}
	say := func(format string, a ...any) { fmt.Printf("daca: "+format+"\n", a...) }
	secretsFile := filepath.Join(cfg.root, "secrets.json")
	if err := ensureSecretsFile(cfg.root, secretsFile, say); err != nil {
		return err
	}
	say("starting the stack (logs in %s)", filepath.Join(cfg.runDir, "logs"))
	st, err := stack.Start(ctx, cfg.stackConfig(secretsFile))
	if err != nil {
		if ctx.Err() != nil {
			say("interrupted; everything started was stopped")
			return nil
		}
		return err
	}
	tokenFile := filepath.Join(cfg.runDir, "dapr-api-token")
	if err := os.WriteFile(tokenFile, []byte(st.APIToken+"\n"), 0o600); err != nil {
		st.Stop()
		return err
	}
	defer os.Remove(tokenFile)

	fmt.Println()
	st.PrintStatus(os.Stdout)
	fmt.Println()
	printNextSteps(os.Stdout, st, tokenFile)

	return runUntilStopped(ctx, st, "stack", say, "stopping (apps, sidecars, scheduler, placement, Redis and the broker)", "stopped; nothing of this run is left running")
}

// runUntilStopped waits until ctx ends (Ctrl-C) or a process of the stack
// (what: "stack", "cluster") stops unexpectedly, then stops everything,
// saying before and after.
func runUntilStopped(ctx context.Context, st *stack.Stack, what string, say func(string, ...any), stopping, stopped string) error {
	if err := st.Wait(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "\ndaca: %v\ndaca: stopping everything else\n", err)
		st.Stop()
		return fmt.Errorf("a process of the %s stopped unexpectedly (see above)", what)
	}
	say(stopping)
	st.Stop()
	say(stopped)
	return nil
}

// parseUp reads up's flags and their environment variables. It returns nil
// and no error for -h.
func parseUp(args []string) (*upConfig, error) {
	fs := flag.NewFlagSet("daca up", flag.ContinueOnError)
	c := &upConfig{redisPort: 6390, placement: 50005, scheduler: 50006}
	fs.StringVar(&c.root, "root", ".", "repository root")
	fs.StringVar(&c.runDir, "run-dir", envOr("DACA_RUN_DIR", ".run"), "run directory: logs, Redis data, tokens (env DACA_RUN_DIR)")
	fs.StringVar(&c.redisAddr, "redis-addr", os.Getenv("REDIS_ADDR"), "use this Redis (host:port) instead of starting one (env REDIS_ADDR)")
	fs.StringVar(&c.broker, "broker", envOr("BROKER", stack.BrokerRedis), "pub/sub broker: "+strings.Join(stack.Brokers, " or ")+" (env BROKER; make run BROKER=rabbitmq)")
	fs.BoolVar(&c.secure, "secure", envBool("DACA_SECURE"), "also set APP_API_TOKEN, so only its own sidecar may call an app (env DACA_SECURE=1)")
	fs.StringVar(&c.logLevel, "log-level", envOr("DACA_LOG_LEVEL", "info"), "log level of the Dapr processes (env DACA_LOG_LEVEL)")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", 120*time.Second, "how long to wait for every part to be ready")
	llmMax, err := strconv.Atoi(envOr("LLM_MAX_CONCURRENT", "0"))
	if err != nil || llmMax < 0 {
		return nil, fmt.Errorf("LLM_MAX_CONCURRENT=%q is not a number of concurrent LLM calls (0: no limit)", os.Getenv("LLM_MAX_CONCURRENT"))
	}
	fs.IntVar(&c.llmMaxConcurrent, "llm-max-concurrent", llmMax, "at most this many chat turns call the LLM at once, 0 for no limit (env LLM_MAX_CONCURRENT)")

	type portFlag struct {
		p   *int
		env string
	}
	var ports []portFlag
	portVar := func(p *int, name, env, help string) {
		fs.IntVar(p, name, *p, fmt.Sprintf("%s (env %s)", help, env))
		ports = append(ports, portFlag{p, env})
	}
	portVar(&c.redisPort, "redis-port", "REDIS_PORT", "port of the Redis that daca starts")
	portVar(&c.placement, "placement-port", "PLACEMENT_PORT", "Dapr placement gRPC port")
	portVar(&c.scheduler, "scheduler-port", "SCHEDULER_PORT", "Dapr scheduler gRPC port")
	c.apps = append([]stack.Def(nil), stack.System...)
	for i := range c.apps {
		d := &c.apps[i]
		env := strings.ToUpper(d.Short)
		portVar(&d.Port, d.Short+"-port", env+"_PORT", d.ID+" app port")
		portVar(&d.HTTPPort, d.Short+"-dapr-http-port", env+"_DAPR_HTTP_PORT", d.ID+" sidecar HTTP port")
		portVar(&d.GRPCPort, d.Short+"-dapr-grpc-port", env+"_DAPR_GRPC_PORT", d.ID+" sidecar gRPC port")
	}
	// Environment first, flags override it.
	for _, f := range ports {
		if v := os.Getenv(f.env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 || n > 65535 {
				return nil, fmt.Errorf("%s=%q is not a port number", f.env, v)
			}
			*f.p = n
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil
		}
		return nil, usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return nil, usageError("daca up: unexpected arguments: " + strings.Join(fs.Args(), " "))
	}
	if !slices.Contains(stack.Brokers, c.broker) {
		return nil, usageError(fmt.Sprintf("daca up: unknown broker %q: use %s", c.broker, strings.Join(stack.Brokers, " or ")))
	}
	root, err := filepath.Abs(c.root)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(root, "tools", "dapr", "go.mod")); err != nil {
		return nil, fmt.Errorf("%s is not the daca repository root (run daca up from there, or pass --root)", root)
	}
	c.root = root
	if !filepath.IsAbs(c.runDir) {
		c.runDir = filepath.Join(root, c.runDir)
	}
	return c, nil
}

// stackConfig is the stack of `daca up`: the tutorial's ports, persistent
// Redis data, text logs, and the apps' settings handed on from daca's
// environment.
func (c *upConfig) stackConfig(secretsFile string) stack.Config {
	env := append(passThrough(os.Environ()), "LOG_FORMAT=text")
	apps := make([]stack.App, len(c.apps))
	for i, d := range c.apps {
		a := d.App(env...)
		a.AppPort, a.HTTPPort, a.GRPCPort = d.Port, d.HTTPPort, d.GRPCPort
		apps[i] = a
	}
	cfg := stack.Config{
		Root:             c.root,
		RunDir:           c.runDir,
		SecretsFile:      secretsFile,
		RedisAddr:        c.redisAddr,
		RedisPort:        c.redisPort,
		RedisPersist:     true,
		Broker:           c.broker,
		PlacementPort:    c.placement,
		SchedulerPort:    c.scheduler,
		Apps:             apps,
		Secure:           c.secure,
		LLMMaxConcurrent: c.llmMaxConcurrent,
		LogLevel:         c.logLevel,
		ReadyTimeout:     c.readyTimeout,
		Out:              os.Stdout,
		Progress:         os.Stdout,
	}
	if cfg.RedisAddr != "" {
		cfg.RedisPort = 0
	}
	return cfg
}

func printNextSteps(w io.Writer, st *stack.Stack, tokenFile string) {
	if gw := st.App(contract.GatewayApp); gw != nil {
		fmt.Fprintf(w, "GraphQL playground: http://127.0.0.1:%d/   (endpoint http://127.0.0.1:%d/graphql)\n", gw.AppPort, gw.AppPort)
	}
	fmt.Fprintf(w, "Every sidecar requires its Dapr API token, stored in %s for this run:\n", tokenFile)
	if a := st.App(contract.ChatApp); a != nil {
		fmt.Fprintf(w, "  curl -H \"dapr-api-token: $(cat %s)\" %s/v1.0/invoke/%s/method/health\n", tokenFile, a.SidecarURL(), contract.ChatApp)
	}
	fmt.Fprintln(w, "Press Ctrl-C to stop everything.")
}

func ensureSecretsFile(root, path string, say func(string, ...any)) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	example, err := os.ReadFile(filepath.Join(root, "secrets.example.json"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, example, 0o600); err != nil {
		return err
	}
	say("created secrets.json from secrets.example.json (empty Gemini key: the offline model answers)")
	return nil
}

// passThroughPrefixes are the apps' own settings that `daca up` hands on
// from its environment (README, Configuration), e.g. LLM_BASE_URL=... make run.
var passThroughPrefixes = []string{"LLM_", "CHAT_TIMEOUT", "HISTORY_CAP", "SUMMARY_LAST", "LOG_LEVEL",
	"AUTH_MODE", "JWT_", "GRAPHQL_", "CORS_ORIGINS", "RATE_LIMIT_", "WS_", "SUBSCRIBER_QUEUE", "BACKEND_TIMEOUT", "OTEL_", "PPROF_ADDR", "BACKEND_INVOCATION", "AGENT_", "TOOL_RESULT_MAX"}

func passThrough(environ []string) []string {
	var out []string
	for _, kv := range environ {
		for _, p := range passThroughPrefixes {
			if strings.HasPrefix(kv, p) {
				out = append(out, kv)
				break
			}
		}
	}
	return out
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envBool(k string) bool {
	v, _ := strconv.ParseBool(os.Getenv(k))
	return v
}
