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
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/daca-go/daca/internal/dev/proc"
	"github.com/daca-go/daca/internal/dev/toolchain"
)

// App is one Dapr application: a sidecar, and the app process unless the app
// runs elsewhere (for example inside a test binary).
type App struct {
	ID string
	// Name is the app's unique name in the stack (process and log names,
	// Stack.App); default ID. Two replicas of one app id need two names.
	Name    string
	AppPort int // port the app listens on; 0 with no Command means no app channel

	// Sidecar ports; 0 picks a free port.
	HTTPPort, GRPCPort, InternalGRPCPort, MetricsPort int

	// Command starts the app; nil when the app runs elsewhere.
	Command []string
	// Build, when set and Command is nil, is a Go package (such as
	// ./services/chat) that Start builds and runs as the app.
	Build string
	Dir   string   // working directory of the app; default the repository root
	Env   []string // extra environment of the app

	// HealthPath is polled on the app port until it answers 2xx; "" skips it.
	HealthPath string
	// Secrets are the secret-store keys this app may read; all others are denied.
	Secrets []string
	// DaprdArgs are extra daprd flags.
	DaprdArgs []string
}

// Config describes a stack.
type Config struct {
	Root        string // repository root (tools/dapr, components/)
	RunDir      string // logs, data, name-resolution database
	Components  string // Dapr resources directory; default Root/components
	SecretsFile string // local secret store file; default Root/secrets.json

	RedisAddr    string // an existing Redis (host:port); "" starts one
	RedisPort    int    // port of the Redis we start; 0 picks one
	RedisPersist bool   // keep Redis data across runs (RDB + AOF under RunDir/redis)

	PlacementPort, SchedulerPort int // 0 picks free ports

	Apps []App

	APIToken string // DAPR_API_TOKEN of every sidecar; "" makes a random one
	Secure   bool   // also set APP_API_TOKEN, so only its sidecar may call an app

	LogLevel     string        // daprd/placement/scheduler log level; default info
	ReadyTimeout time.Duration // default 90s

	Out      io.Writer // prefixed process output; nil discards it
	Progress io.Writer // what the launcher is doing; nil discards it
}

// RunningApp is an app of a started stack, with its resolved ports.
type RunningApp struct {
	App
	Daprd  *proc.Process
	AppCmd *proc.Process // nil when the app runs elsewhere
}

// SidecarURL is the sidecar's HTTP API base, e.g. http://127.0.0.1:3500.
func (a *RunningApp) SidecarURL() string { return "http://127.0.0.1:" + strconv.Itoa(a.HTTPPort) }

// SidecarGRPC is the sidecar's gRPC API address.
func (a *RunningApp) SidecarGRPC() string { return "127.0.0.1:" + strconv.Itoa(a.GRPCPort) }

// AppURL is the app's own base URL.
func (a *RunningApp) AppURL() string { return "http://127.0.0.1:" + strconv.Itoa(a.AppPort) }

// Stack is a started system.
type Stack struct {
	cfg       Config
	Bins      toolchain.Bins
	RedisAddr string
	APIToken  string
	AppToken  string // APP_API_TOKEN when Secure

	Redis                          *proc.Process // nil with an existing Redis
	Placement                      *proc.Process
	Scheduler                      *proc.Process
	placementPorts, schedulerPorts [2]int // grpc, healthz

	ports *portPicker

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
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 90 * time.Second
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
	bins, err := toolchain.EnsureDapr(ctx, c.Root, c.Progress)
	if err != nil {
		return err
	}
	s.Bins = bins
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

	// Control plane.
	if err := s.startPlacement(); err != nil {
		return err
	}
	if err := s.startScheduler(); err != nil {
		return err
	}
	for _, w := range []struct {
		p    *proc.Process
		port int
	}{{s.Placement, s.placementPorts[1]}, {s.Scheduler, s.schedulerPorts[1]}} {
		url := fmt.Sprintf("http://127.0.0.1:%d/healthz", w.port)
		if err := waitFor(ctx, c.ReadyTimeout, w.p, func() error { return httpOK(url) }); err != nil {
			return fmt.Errorf("%s not ready: %w", w.p.Spec.Name, err)
		}
	}

	// Apps: sidecar first, then the app; then wait for all of them.
	nrDB := filepath.Join(c.RunDir, "nameresolution.db")
	_ = os.Remove(nrDB)
	for i := range c.Apps {
		a := &RunningApp{App: c.Apps[i]}
		if err := s.startApp(a, nrDB); err != nil {
			return err
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

func (s *Stack) buildApps(ctx context.Context) error {
	c := &s.cfg
	for i := range c.Apps {
		a := &c.Apps[i]
		if a.Build == "" || a.Command != nil {
			continue
		}
		bin := filepath.Join(c.RunDir, "bin", a.Name)
		fmt.Fprintf(c.Progress, "stack: building %s (%s)\n", a.Name, a.Build)
		args := []string{"build", "-o", bin}
		if os.Getenv("DACA_RACE") != "" { // apps with the race detector (see DEVELOPERS.md)
			args = append(args, "-race")
		}
		cmd := exec.CommandContext(ctx, "go", append(args, a.Build)...)
		cmd.Dir = c.Root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %w\n%s", a.Build, err, out)
		}
		a.Command = []string{bin}
	}
	return nil
}

func (s *Stack) assignPorts() error {
	c := &s.cfg
	var fixed []namedPort
	add := func(name string, p *int) {
		if *p != 0 {
			fixed = append(fixed, namedPort{name, *p})
		}
	}
	if c.RedisAddr == "" {
		add("redis", &c.RedisPort)
	}
	add("placement", &c.PlacementPort)
	add("scheduler", &c.SchedulerPort)
	for i := range c.Apps {
		a := &c.Apps[i]
		if a.Command != nil {
			add(a.Name+" app", &a.AppPort)
		}
		add(a.Name+" sidecar HTTP", &a.HTTPPort)
		add(a.Name+" sidecar gRPC", &a.GRPCPort)
		add(a.Name+" sidecar internal gRPC", &a.InternalGRPCPort)
		add(a.Name+" sidecar metrics", &a.MetricsPort)
	}
	if err := checkFree(fixed); err != nil {
		return err
	}
	s.ports = newPortPicker(fixed)
	pick := func(p *int) error {
		if *p != 0 {
			return nil
		}
		v, err := s.ports.pick()
		*p = v
		return err
	}
	var errs []error
	if c.RedisAddr == "" {
		errs = append(errs, pick(&c.RedisPort))
	}
	errs = append(errs, pick(&c.PlacementPort), pick(&c.SchedulerPort))
	for i := range c.Apps {
		a := &c.Apps[i]
		if a.Command != nil {
			errs = append(errs, pick(&a.AppPort))
		}
		errs = append(errs, pick(&a.HTTPPort), pick(&a.GRPCPort), pick(&a.InternalGRPCPort), pick(&a.MetricsPort))
	}
	errs = append(errs, pick(&s.placementPorts[1]), pick(&s.schedulerPorts[1]))
	return errors.Join(errs...)
}

func (s *Stack) spawn(name, path string, args, env []string, dir string) (*proc.Process, error) {
	if dir == "" {
		dir = s.cfg.Root
	}
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, k := range []string{"GOCOVERDIR", "GORACE"} {
		if v := os.Getenv(k); v != "" {
			base = append(base, k+"="+v)
		}
	}
	p, err := proc.Start(proc.Spec{
		Name:    name,
		Path:    path,
		Args:    args,
		Env:     append(base, env...),
		Dir:     dir,
		LogFile: filepath.Join(s.cfg.RunDir, "logs", name+".log"),
		Out:     s.cfg.Out,
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	go func() {
		<-p.Done()
		if !p.Stopping() {
			select {
			case s.exits <- p.Exited():
			default:
			}
		}
	}()
	return p, nil
}

func (s *Stack) startPlacement() error {
	c := &s.cfg
	raft, err := s.ports.pick()
	if err != nil {
		return err
	}
	s.placementPorts[0] = c.PlacementPort
	metrics, err := s.ports.pick()
	if err != nil {
		return err
	}
	p, err := s.spawn("placement", s.Bins.Placement, []string{
		"--port", strconv.Itoa(c.PlacementPort),
		"--listen-address", "127.0.0.1",
		"--healthz-port", strconv.Itoa(s.placementPorts[1]),
		"--healthz-listen-address", "127.0.0.1",
		"--metrics-port", strconv.Itoa(metrics),
		"--metrics-listen-address", "127.0.0.1",
		"--initial-cluster", fmt.Sprintf("dapr-placement-0=127.0.0.1:%d", raft),
		"--log-level", c.LogLevel,
	}, nil, c.RunDir)
	s.Placement = p
	return err
}

func (s *Stack) startScheduler() error {
	c := &s.cfg
	s.schedulerPorts[0] = c.SchedulerPort
	var extra [3]int
	for i := range extra {
		p, err := s.ports.pick()
		if err != nil {
			return err
		}
		extra[i] = p
	}
	dataDir := filepath.Join(c.RunDir, "scheduler")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return err
	}
	p, err := s.spawn("scheduler", s.Bins.Scheduler, []string{
		"--port", strconv.Itoa(c.SchedulerPort),
		"--listen-address", "127.0.0.1",
		"--healthz-port", strconv.Itoa(s.schedulerPorts[1]),
		"--healthz-listen-address", "127.0.0.1",
		"--metrics-port", strconv.Itoa(extra[0]),
		"--metrics-listen-address", "127.0.0.1",
		"--etcd-data-dir", dataDir,
		"--etcd-client-port", strconv.Itoa(extra[1]),
		"--etcd-client-listen-address", "127.0.0.1",
		"--etcd-initial-cluster", fmt.Sprintf("dapr-scheduler-server-0=http://127.0.0.1:%d", extra[2]),
		"--log-level", c.LogLevel,
	}, nil, c.RunDir)
	s.Scheduler = p
	return err
}

// SecretsYAML renders an allow-list for DACA_ALLOWED_SECRETS.
func SecretsYAML(keys []string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = strconv.Quote(k)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func (s *Stack) startApp(a *RunningApp, nrDB string) error {
	c := &s.cfg
	args := []string{
		"--app-id", a.ID,
		"--dapr-http-port", strconv.Itoa(a.HTTPPort),
		"--dapr-grpc-port", strconv.Itoa(a.GRPCPort),
		"--dapr-internal-grpc-port", strconv.Itoa(a.InternalGRPCPort),
		"--dapr-internal-grpc-listen-address", "127.0.0.1",
		"--dapr-listen-addresses", "127.0.0.1",
		"--metrics-port", strconv.Itoa(a.MetricsPort),
		"--metrics-listen-address", "127.0.0.1",
		"--resources-path", c.Components,
		"--config", filepath.Join(c.Components, "config.yaml"),
		"--placement-host-address", fmt.Sprintf("127.0.0.1:%d", c.PlacementPort),
		"--scheduler-host-address", fmt.Sprintf("127.0.0.1:%d", c.SchedulerPort),
		"--dapr-graceful-shutdown-seconds", "5",
		"--log-level", c.LogLevel,
	}
	if a.AppPort != 0 {
		args = append(args, "--app-port", strconv.Itoa(a.AppPort), "--app-protocol", "http")
	}
	args = append(args, a.DaprdArgs...)
	env := []string{
		"REDIS_HOST=" + s.RedisAddr,
		"SECRETS_FILE=" + c.SecretsFile,
		"DACA_ALLOWED_SECRETS=" + SecretsYAML(a.Secrets),
		"DACA_NAMERESOLUTION_DB=" + nrDB,
		"DAPR_HOST_IP=127.0.0.1",
		"DAPR_API_TOKEN=" + s.APIToken,
	}
	if s.AppToken != "" {
		env = append(env, "APP_API_TOKEN="+s.AppToken)
	}
	if v := os.Getenv("REDIS_PASSWORD"); v != "" {
		env = append(env, "REDIS_PASSWORD="+v)
	}
	d, err := s.spawn(a.Name+"-dapr", s.Bins.Daprd, args, env, c.RunDir)
	if err != nil {
		return err
	}
	a.Daprd = d
	s.mu.Lock()
	s.apps = append(s.apps, a)
	s.mu.Unlock()
	if a.Command != nil {
		if err := s.startAppProcess(a); err != nil {
			return err
		}
	}
	return nil
}

// AppEnv is the environment an app process gets from the stack.
func (s *Stack) AppEnv(a *RunningApp) []string {
	env := []string{
		"APP_ID=" + a.ID,
		"APP_PORT=" + strconv.Itoa(a.AppPort),
		"DAPR_HTTP_PORT=" + strconv.Itoa(a.HTTPPort),
		"DAPR_GRPC_PORT=" + strconv.Itoa(a.GRPCPort),
		"DAPR_API_TOKEN=" + s.APIToken,
	}
	if s.AppToken != "" {
		env = append(env, "APP_API_TOKEN="+s.AppToken)
	}
	return append(env, a.Env...)
}

func (s *Stack) startAppProcess(a *RunningApp) error {
	p, err := s.spawn(a.Name, a.Command[0], a.Command[1:], s.AppEnv(a), a.Dir)
	if err != nil {
		return err
	}
	s.mu.Lock()
	a.AppCmd = p
	s.mu.Unlock()
	return nil
}

func (s *Stack) waitApp(ctx context.Context, a *RunningApp) error {
	t := s.cfg.ReadyTimeout
	if a.AppCmd != nil && a.HealthPath != "" {
		url := a.AppURL() + a.HealthPath
		if err := waitFor(ctx, t, a.AppCmd, func() error { return httpOK(url) }); err != nil {
			return fmt.Errorf("%s not ready: %w", a.Name, err)
		}
	}
	url := a.SidecarURL() + "/v1.0/healthz"
	if err := waitFor(ctx, t, a.Daprd, func() error { return httpOK(url) }); err != nil {
		return fmt.Errorf("%s sidecar not ready: %w", a.Name, err)
	}
	return nil
}

// KillApp kills an app process without restarting it.
func (s *Stack) KillApp(id string) error {
	a := s.App(id)
	if a == nil || a.AppCmd == nil {
		return fmt.Errorf("stack: no app process %q", id)
	}
	a.AppCmd.Kill()
	return nil
}

// StartApp starts the process of an app again after KillApp and waits for it.
func (s *Stack) StartApp(ctx context.Context, id string) error {
	a := s.App(id)
	if a == nil || a.Command == nil {
		return fmt.Errorf("stack: no app process %q", id)
	}
	if err := s.startAppProcess(a); err != nil {
		return err
	}
	return s.waitApp(ctx, a)
}

// App returns the running app with the name (by default its id), or nil.
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
// placement, Redis. It returns when every process is gone.
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
		stopAll([]*proc.Process{s.Scheduler}, 10*time.Second)
		stopAll([]*proc.Process{s.Placement}, 5*time.Second)
		stopAll([]*proc.Process{s.Redis}, 10*time.Second)
		// Anything else (a process started after a failed start).
		stopAll(s.Processes(), 5*time.Second)
	})
}

// waitFor polls check until it succeeds, the deadline passes, ctx ends, or
// the watched process exits.
func waitFor(ctx context.Context, timeout time.Duration, watch *proc.Process, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		var exited <-chan struct{}
		if watch != nil {
			exited = watch.Done()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return watch.Exited()
		case <-time.After(150 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still failing after %s: %w", timeout, last)
		}
	}
}

var probe = &http.Client{Timeout: 2 * time.Second}

func httpOK(url string) error {
	resp, err := probe.Get(url)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
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

type namedPort struct {
	name string
	port int
}

// PortInUseError names a port that is already taken.
type PortInUseError struct {
	Name string
	Port int
}

func (e *PortInUseError) Error() string {
	return fmt.Sprintf("port %d (%s) is already in use; stop what uses it or choose another port (see `daca up -h`)", e.Port, e.Name)
}

func checkFree(ports []namedPort) error {
	seen := map[int]string{}
	for _, p := range ports {
		if other, ok := seen[p.port]; ok {
			return fmt.Errorf("port %d is configured twice: %s and %s", p.port, other, p.name)
		}
		seen[p.port] = p.name
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)))
		if err != nil {
			return &PortInUseError{Name: p.name, Port: p.port}
		}
		l.Close()
	}
	return nil
}

// portPicker hands out free loopback ports, never one it gave before or one
// that is reserved.
type portPicker struct{ used map[int]bool }

func newPortPicker(reserved []namedPort) *portPicker {
	pp := &portPicker{used: map[int]bool{}}
	portMu.Lock()
	defer portMu.Unlock()
	for _, r := range reserved {
		pp.used[r.port] = true
		portsUsed[r.port] = true // never handed out by FreePort in this process either
	}
	return pp
}

func (pp *portPicker) pick() (int, error) {
	for range 50 {
		p, err := freePort()
		if err != nil {
			return 0, err
		}
		if !pp.used[p] {
			pp.used[p] = true
			return p, nil
		}
	}
	return 0, errors.New("no free port found")
}

var (
	portMu    sync.Mutex
	portsUsed = map[int]bool{}
)

// freePort returns a free loopback port that this process has not handed out
// before.
func freePort() (int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !portsUsed[p] {
			portsUsed[p] = true
			return p, nil
		}
	}
	return 0, errors.New("no free port found")
}

// FreePort returns a free loopback port (for apps that run inside tests).
func FreePort() (int, error) { return freePort() }
