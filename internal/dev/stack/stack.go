// Package stack starts the whole DACA system on one machine from real parts:
// redis-server, Dapr placement and scheduler, and for every app its own daprd
// sidecar and (optionally) the app process. The launcher (cmd/daca) and the
// end-to-end test harness (internal/stack/stacktest) both use it.
//
// Everything listens on loopback. Each run has its own Dapr API token, its own
// name-resolution database and its own directories, so two stacks on one
// machine never see each other.
package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/daca-go/daca/internal/contract"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/daca-go/daca/internal/dev/proc"
	"github.com/daca-go/daca/internal/dev/toolchain"
)

// Config describes a stack.
type Config struct {
	Root       string // repository root (tools/dapr, components/)
	RunDir     string // logs, data, name-resolution database
	Components string // Dapr resources directory; default Root/components

	// Bins are Dapr binaries to run instead of the project's release
	// (built under Root/.bin when needed): another release, to compare.
	Bins        *toolchain.Bins
	SecretsFile string // local secret store file; default Root/secrets.json

	RedisAddr    string // an existing Redis (host:port); "" starts one
	RedisPort    int    // port of the Redis we start; 0 picks one
	RedisPersist bool   // keep Redis (and RabbitMQ) data across runs (under RunDir/redis, RunDir/rabbitmq)

	// Broker is what pub/sub runs on: BrokerRedis (default) or
	// BrokerRabbitMQ (a RabbitMQ node of the run's own, and the component
	// files of components/brokers/rabbitmq in place of components/'s).
	Broker string

	PlacementPort, SchedulerPort int // 0 picks free ports

	// Cluster lays the stack out on several hosts, with the control plane
	// in its highly available form and mTLS (cluster.go); nil: one host,
	// loopback.
	Cluster *Cluster

	Apps []App

	APIToken string // DAPR_API_TOKEN of every sidecar; "" makes a random one
	Secure   bool   // also set APP_API_TOKEN, so only its sidecar may call an app

	// LLMMaxConcurrent caps the generate_response activities that run at
	// once (components/config.yaml, enforced by the scheduler); 0: no cap.
	LLMMaxConcurrent int

	// PortWait is how long a configured port held only by connections (not
	// a listener) is waited for; default 60s.
	PortWait time.Duration

	LogLevel     string        // daprd/placement/scheduler log level; default info
	ReadyTimeout time.Duration // default 90s

	Out      io.Writer // prefixed process output; nil discards it
	Progress io.Writer // what the launcher is doing; nil discards it
}

// Stack is a started system.
type Stack struct {
	cfg       Config
	Bins      toolchain.Bins
	RedisAddr string
	APIToken  string
	AppToken  string // APP_API_TOKEN when Secure

	Redis                *proc.Process // nil with an existing Redis
	RabbitMQ, Epmd       *proc.Process // with BrokerRabbitMQ
	RabbitMQURL          string        // amqp:// URL with the run's credentials
	rabbitPort, epmdPort int
	resources            string // the sidecars' --resources-path
	Placement            *proc.Process
	Scheduler            *proc.Process
	// On a cluster: every placement server and scheduler (Placement and
	// Scheduler are the first of each), and sentry.
	Placements, Schedulers             []*proc.Process
	Sentry                             *proc.Process
	trustAnchors                       string            // sentry's root certificate (a file)
	tokens                             *issuer           // signs the tokens sentry asks for, on a cluster
	configs                            map[string]string // app id → its Configuration, on a cluster
	nrDB                               string            // the sidecars' name-resolution database
	hostOf                             map[string]string // process name → its cluster host
	order                              []string          // the names of hostOf, in start order
	supervisedRestarts                 map[string]int    // cluster control plane processes started again after exiting on their own
	placementHealthz, schedulerHealthz int               // their /healthz ports (gRPC: Config.PlacementPort, SchedulerPort)

	mu    sync.Mutex
	apps  []*RunningApp
	procs []*proc.Process // in start order
	exits chan *proc.ExitError
	once  sync.Once
}

// Start starts the stack and waits until every part is ready. On error,
// whatever was started is stopped again.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	s := &Stack{cfg: cfg, exits: make(chan *proc.ExitError, 16)}
	if err := s.start(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (c *Config) defaults() error {
	if c.Root == "" {
		return errors.New("stack: Root is required")
	}
	if c.RunDir == "" {
		c.RunDir = filepath.Join(c.Root, ".run")
	}
	if c.Components == "" {
		c.Components = filepath.Join(c.Root, "components")
	}
	if c.SecretsFile == "" {
		c.SecretsFile = filepath.Join(c.Root, "secrets.json")
	}
	if c.Broker == "" {
		c.Broker = BrokerRedis
	}
	if !slices.Contains(Brokers, c.Broker) {
		return fmt.Errorf("stack: unknown broker %q (one of %s)", c.Broker, strings.Join(Brokers, ", "))
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 90 * time.Second
	}
	if c.PortWait == 0 {
		c.PortWait = 60 * time.Second
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	c.Out = &syncWriter{w: c.Out}
	seen := map[string]bool{}
	for i := range c.Apps {
		a := &c.Apps[i]
		if a.Name == "" {
			a.Name = a.ID
		}
		if a.ID == "" || seen[a.Name] {
			return fmt.Errorf("stack: app %q has no id or its name is used twice", a.Name)
		}
		seen[a.Name] = true
	}
	return nil
}

func (s *Stack) start(ctx context.Context) error {
	c := &s.cfg
	if c.Bins != nil {
		s.Bins = *c.Bins
	} else {
		bins, err := toolchain.EnsureDapr(ctx, c.Root, c.Progress)
		if err != nil {
			return err
		}
		s.Bins = bins
	}
	for _, d := range []string{c.RunDir, filepath.Join(c.RunDir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if _, err := os.Stat(c.SecretsFile); err != nil {
		return fmt.Errorf("secret store file %s: %w", c.SecretsFile, err)
	}
	if err := s.buildApps(ctx); err != nil {
		return err
	}
	if err := s.assignPorts(); err != nil {
		return err
	}
	s.APIToken = c.APIToken
	if s.APIToken == "" {
		s.APIToken = randomToken()
	}
	if c.Secure {
		s.AppToken = randomToken()
	}

	// Redis.
	if c.RedisAddr != "" {
		s.RedisAddr = c.RedisAddr
		if err := waitFor(ctx, 10*time.Second, nil, func() error { return redisPing(s.RedisAddr) }); err != nil {
			return fmt.Errorf("redis at REDIS_ADDR=%s is not reachable: %w", s.RedisAddr, err)
		}
	} else {
		if err := s.startRedis(ctx); err != nil {
			return err
		}
		if c.RedisPersist { // data of earlier runs: drop the groups their gateways left
			n, err := pruneGatewayGroups(s.RedisAddr)
			if err != nil {
				return fmt.Errorf("redis: removing the consumer groups of earlier gateways: %w", err)
			}
			if n > 0 {
				fmt.Fprintf(c.Progress, "stack: removed %d consumer groups left by earlier gateway runs\n", n)
			}
		}
	}

	if c.Broker == BrokerRabbitMQ {
		if err := s.startRabbitMQ(ctx); err != nil {
			return err
		}
	}
	var err error
	toolPort := 0
	for _, a := range c.Apps {
		if a.ID == contract.ToolApp {
			toolPort = a.AppPort
			if wrote, err := ensureToolToken(c.SecretsFile); err != nil {
				return err
			} else if wrote {
				fmt.Fprintf(c.Progress, "stack: added a random %s to %s\n", contract.SecretToolToken, c.SecretsFile)
			}
		}
	}
	if s.resources, err = c.resourcesDir(toolPort); err != nil {
		return err
	}
	if c.Cluster != nil {
		if s.configs, err = clusterConfigs(c.Root, s.resources); err != nil {
			return err
		}
	}

	// Control plane.
	if c.Cluster != nil {
		if err := s.startSentry(ctx); err != nil {
			return err
		}
		if err := s.startHAControlPlane(ctx); err != nil {
			return err
		}
	} else if err := s.startControlPlane(ctx); err != nil {
		return err
	}

	// Apps: sidecar first, then the app; then wait for all of them.
	nrDB := filepath.Join(c.RunDir, "nameresolution.db")
	_ = os.Remove(nrDB)
	s.nrDB = nrDB
	for i := range c.Apps {
		a := &RunningApp{App: c.Apps[i], addr: s.addr(c.Apps[i].Host)}
		if err := s.startApp(a, nrDB); err != nil {
			return err
		}
		if a.WaitReady { // the next apps' sidecars need it up (the tool server: chat-service's MCP discovery)
			if err := s.waitApp(ctx, a); err != nil {
				return err
			}
		}
		if i == 0 {
			// The first sidecar creates the name-resolution database. Sidecars
			// that start beside it can find it locked while it is being set up
			// (SQLITE_BUSY), and then run without name resolution: nobody can
			// invoke them. So the others start once this one's outbound side
			// (name resolution, components) is up.
			url := a.SidecarURL() + "/v1.0/healthz/outbound"
			if err := waitFor(ctx, c.ReadyTimeout, a.Daprd, func() error { return httpOK(url) }); err != nil {
				return fmt.Errorf("%s sidecar not ready: %w", a.Name, err)
			}
		}
	}
	for _, a := range s.Apps() {
		if err := s.waitApp(ctx, a); err != nil {
			return err
		}
	}
	return nil
}

// startControlPlane starts placement and scheduler on loopback.
func (s *Stack) startControlPlane(ctx context.Context) error {
	c := &s.cfg
	if err := s.startPlacement(); err != nil {
		return err
	}
	if err := s.startScheduler(); err != nil {
		return err
	}
	for _, w := range []struct {
		p    *proc.Process
		port int
	}{{s.Placement, s.placementHealthz}, {s.Scheduler, s.schedulerHealthz}} {
		url := fmt.Sprintf("http://127.0.0.1:%d/healthz", w.port)
		if err := waitFor(ctx, c.ReadyTimeout, w.p, func() error { return httpOK(url) }); err != nil {
			return fmt.Errorf("%s not ready: %w", w.p.Spec.Name, err)
		}
	}
	return nil
}

// App returns the running app with the name (by default its id), or nil.
// ResourcesDir is the Dapr resources directory of every sidecar of the
// stack: a resource written there reaches the sidecars with HotReload
// without a restart.
func (s *Stack) ResourcesDir() string { return s.resources }

func (s *Stack) App(name string) *RunningApp {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.apps {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// Apps returns the running apps in start order.
func (s *Stack) Apps() []*RunningApp {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*RunningApp(nil), s.apps...)
}

// Processes returns every started process in start order.
func (s *Stack) Processes() []*proc.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*proc.Process(nil), s.procs...)
}

// Wait blocks until a process exits that should not have (its ExitError) or
// ctx is done (nil).
func (s *Stack) Wait(ctx context.Context) error {
	select {
	case e := <-s.exits:
		return e
	case <-ctx.Done():
		return nil
	}
}

// Stop stops everything in dependency order: apps, sidecars, scheduler,
// placement, Redis and RabbitMQ. It returns when every process is gone.
func (s *Stack) Stop() {
	s.once.Do(func() {
		apps := s.Apps()
		var wg sync.WaitGroup
		stopAll := func(ps []*proc.Process, grace time.Duration) {
			for _, p := range ps {
				if p == nil {
					continue
				}
				wg.Add(1)
				go func() { defer wg.Done(); p.Stop(grace) }()
			}
			wg.Wait()
		}
		var appProcs, sidecars []*proc.Process
		for _, a := range apps {
			s.mu.Lock()
			appProcs = append(appProcs, a.AppCmd)
			s.mu.Unlock()
			sidecars = append(sidecars, a.Daprd)
		}
		stopAll(appProcs, 10*time.Second)
		stopAll(sidecars, 10*time.Second)
		stopAll(append([]*proc.Process{s.Scheduler}, s.Schedulers...), 10*time.Second)
		stopAll(append([]*proc.Process{s.Placement}, s.Placements...), 5*time.Second)
		stopAll([]*proc.Process{s.Sentry}, 5*time.Second)
		stopAll([]*proc.Process{s.Redis, s.RabbitMQ}, 10*time.Second)
		stopAll([]*proc.Process{s.Epmd}, 5*time.Second)
		// Anything else (a process started after a failed start).
		stopAll(s.Processes(), 5*time.Second)
	})
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// StartApp starts one more app (a sidecar, and the app when it has a
// Command) on the running stack, on free ports where a is not given any,
// and waits until it is ready.
func (s *Stack) StartApp(ctx context.Context, a App) (*RunningApp, error) {
	if a.Name == "" {
		a.Name = a.ID
	}
	for _, p := range []*int{&a.HTTPPort, &a.GRPCPort, &a.InternalGRPCPort, &a.MetricsPort} {
		if *p == 0 {
			v, err := freePort()
			if err != nil {
				return nil, err
			}
			*p = v
		}
	}
	ra := &RunningApp{App: a, addr: s.addr(a.Host)}
	if err := s.startApp(ra, s.nrDB); err != nil {
		return nil, err
	}
	return ra, s.waitApp(ctx, ra)
}
