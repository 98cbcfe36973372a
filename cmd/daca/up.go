package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/toolchain"
)

// appDef is an app of the system as `daca up` runs it.
type appDef struct {
	id, short, dir string
	port, httpPort int
	grpcPort       int
	health         string
	secrets        []string
}

// apps are the three apps, in start order. Ports follow the DACA tutorial.
var apps = []appDef{
	{id: "agent-memory-service", short: "memory", dir: "services/memory", port: 8001, httpPort: 3501, grpcPort: 50002,
		health: "/health", secrets: []string{"gemini-api-key"}},
	{id: "chat-service", short: "chat", dir: "services/chat", port: 8010, httpPort: 3500, grpcPort: 50001,
		health: "/health", secrets: []string{"gemini-api-key"}},
	{id: "gateway", short: "gateway", dir: "gateway", port: 8080, httpPort: 3502, grpcPort: 50003,
		health: "/healthz", secrets: []string{"gateway-jwt-secret"}},
}

type intFlag struct {
	p   *int
	env string
}

func up(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("daca up", flag.ContinueOnError)
	var (
		root         = fs.String("root", ".", "repository root")
		runDir       = fs.String("run-dir", envOr("DACA_RUN_DIR", ".run"), "run directory: logs, Redis data, tokens (env DACA_RUN_DIR)")
		redisAddr    = fs.String("redis-addr", os.Getenv("REDIS_ADDR"), "use this Redis (host:port) instead of starting one (env REDIS_ADDR)")
		redisPort    = 6390
		placement    = 50005
		scheduler    = 50006
		secure       = fs.Bool("secure", envBool("DACA_SECURE"), "also set APP_API_TOKEN, so only its own sidecar may call an app (env DACA_SECURE=1)")
		logLevel     = fs.String("log-level", envOr("DACA_LOG_LEVEL", "info"), "log level of the Dapr processes (env DACA_LOG_LEVEL)")
		readyTimeout = fs.Duration("ready-timeout", 120*time.Second, "how long to wait for every part to be ready")
	)
	ints := []intFlag{}
	intVar := func(p *int, name, env, help string) {
		fs.IntVar(p, name, *p, fmt.Sprintf("%s (env %s)", help, env))
		ints = append(ints, intFlag{p, env})
	}
	intVar(&redisPort, "redis-port", "REDIS_PORT", "port of the Redis that daca starts")
	intVar(&placement, "placement-port", "PLACEMENT_PORT", "Dapr placement gRPC port")
	intVar(&scheduler, "scheduler-port", "SCHEDULER_PORT", "Dapr scheduler gRPC port")
	defs := make([]appDef, len(apps))
	copy(defs, apps)
	for i := range defs {
		d := &defs[i]
		up := strings.ToUpper(d.short)
		intVar(&d.port, d.short+"-port", up+"_PORT", d.id+" app port")
		intVar(&d.httpPort, d.short+"-dapr-http-port", up+"_DAPR_HTTP_PORT", d.id+" sidecar HTTP port")
		intVar(&d.grpcPort, d.short+"-dapr-grpc-port", up+"_DAPR_GRPC_PORT", d.id+" sidecar gRPC port")
	}
	// Environment first, flags override it.
	for _, f := range ints {
		if v := os.Getenv(f.env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 || n > 65535 {
				return fmt.Errorf("%s=%q is not a port number", f.env, v)
			}
			*f.p = n
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return usageError("daca up: unexpected arguments: " + strings.Join(fs.Args(), " "))
	}
	rootDir, err := filepath.Abs(*root)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(rootDir, "tools", "dapr", "go.mod")); err != nil {
		return fmt.Errorf("%s is not the daca repository root (run daca up from there, or pass --root)", rootDir)
	}
	rd := *runDir
	if !filepath.IsAbs(rd) {
		rd = filepath.Join(rootDir, rd)
	}
	say := func(format string, a ...any) { fmt.Printf("daca: "+format+"\n", a...) }

	secretsFile := filepath.Join(rootDir, "secrets.json")
	if err := ensureSecretsFile(rootDir, secretsFile, say); err != nil {
		return err
	}
	if _, err := toolchain.EnsureDapr(ctx, rootDir, os.Stdout); err != nil {
		return err
	}

	// The apps that exist so far, built into .bin/apps.
	var stackApps []stack.App
	for _, d := range defs {
		if !hasMain(filepath.Join(rootDir, d.dir)) {
			say("%s: not in this checkout yet (%s); running without it", d.id, d.dir)
			continue
		}
		bin := filepath.Join(rootDir, ".bin", "apps", d.id)
		say("building %s (./%s)", d.id, d.dir)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./"+d.dir)
		cmd.Dir = rootDir
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building %s: %w", d.id, err)
		}
		stackApps = append(stackApps, stack.App{
			ID: d.id, AppPort: d.port, HTTPPort: d.httpPort, GRPCPort: d.grpcPort,
			Command: []string{bin}, HealthPath: d.health, Secrets: d.secrets,
			Env: append(passThrough(os.Environ()), "LOG_FORMAT=text"),
		})
	}

	cfg := stack.Config{
		Root:         rootDir,
		RunDir:       rd,
		SecretsFile:  secretsFile,
		RedisAddr:    *redisAddr,
		RedisPort:    redisPort,
		RedisPersist: true,
		Apps:         stackApps,
		Secure:       *secure,
		LogLevel:     *logLevel,
		ReadyTimeout: *readyTimeout,
		Out:          os.Stdout,
		Progress:     os.Stdout,
	}
	if cfg.RedisAddr != "" {
		cfg.RedisPort = 0
	}
	cfg.PlacementPort, cfg.SchedulerPort = placement, scheduler
	say("starting the stack (logs in %s)", filepath.Join(rd, "logs"))
	st, err := stack.Start(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			say("interrupted; everything started was stopped")
			return nil
		}
		return err
	}
	tokenFile := filepath.Join(rd, "dapr-api-token")
	if err := os.WriteFile(tokenFile, []byte(st.APIToken+"\n"), 0o600); err != nil {
		st.Stop()
		return err
	}
	defer os.Remove(tokenFile)

	fmt.Println()
	st.PrintStatus(os.Stdout)
	fmt.Println()
	printNextSteps(os.Stdout, st, tokenFile)

	err = st.Wait(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndaca: %v\ndaca: stopping everything else\n", err)
		st.Stop()
		return errors.New("a process of the stack stopped unexpectedly (see above)")
	}
	say("stopping (apps, sidecars, scheduler, placement, Redis)")
	st.Stop()
	say("stopped; nothing of this run is left running")
	return nil
}

func printNextSteps(w io.Writer, st *stack.Stack, tokenFile string) {
	if gw := st.App("gateway"); gw != nil {
		fmt.Fprintf(w, "GraphQL playground: http://127.0.0.1:%d/   (endpoint http://127.0.0.1:%d/graphql)\n", gw.AppPort, gw.AppPort)
	} else {
		fmt.Fprintln(w, "GraphQL playground: not available yet (the gateway is not in this checkout)")
	}
	fmt.Fprintf(w, "Every sidecar requires its Dapr API token, stored in %s for this run:\n", tokenFile)
	if a := st.App("chat-service"); a != nil {
		fmt.Fprintf(w, "  curl -H \"dapr-api-token: $(cat %s)\" %s/v1.0/invoke/chat-service/method/health\n", tokenFile, a.SidecarURL())
	} else if apps := st.Apps(); len(apps) > 0 {
		fmt.Fprintf(w, "  curl -H \"dapr-api-token: $(cat %s)\" %s/v1.0/metadata\n", tokenFile, apps[0].SidecarURL())
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

var mainPkg = regexp.MustCompile(`(?m)^package main\s*$`)

// hasMain reports whether dir holds a Go main package.
func hasMain(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil && mainPkg.Match(b) {
			return true
		}
	}
	return false
}

// passThroughPrefixes are the apps' own settings that `daca up` hands on
// from its environment (README, Configuration), e.g. LLM_BASE_URL=... make run.
var passThroughPrefixes = []string{"LLM_", "CHAT_TIMEOUT", "HISTORY_CAP", "SUMMARY_LAST", "LOG_LEVEL",
	"AUTH_MODE", "JWT_", "GRAPHQL_", "CORS_ORIGINS", "RATE_LIMIT_", "WS_", "SUBSCRIBER_QUEUE", "BACKEND_TIMEOUT", "OTEL_"}

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

func dapr(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("daca dapr", flag.ContinueOnError)
	root := fs.String("root", ".", "repository root")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError(err.Error())
	}
	rootDir, err := filepath.Abs(*root)
	if err != nil {
		return err
	}
	bins, err := toolchain.EnsureDapr(ctx, rootDir, os.Stdout)
	if err != nil {
		return err
	}
	fmt.Printf("dapr %s: %s (daprd, placement, scheduler)\n", toolchain.DaprVersion, bins.Dir)
	return nil
}
