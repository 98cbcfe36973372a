package stack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/daca-go/daca/internal/dev/proc"
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
	// WaitReady: the stack waits until the app and its sidecar are ready
	// before it starts the next app (the tool server, whose tools
	// chat-service's sidecar discovers when it starts).
	WaitReady bool
	// HotReload: the sidecar loads resources added or changed in the
	// stack's resources directory (ResourcesDir) without a restart.
	HotReload bool
	// Host is the cluster host the app and its sidecar run on (Config.Cluster).
	Host string
	// Token: on a cluster, the app id whose identity the token the sidecar
	// presents to sentry names; "" its own (ID), NoToken none.
	Token string
}

// NoToken is App.Token for a sidecar that presents no token to sentry.
const NoToken = "-"

// RunningApp is an app of a started stack, with its resolved ports.
type RunningApp struct {
	App
	Daprd  *proc.Process
	AppCmd *proc.Process // nil when the app runs elsewhere
	addr   string        // where it listens: its host's address, or loopback
}

// Addr is the address the app and its sidecar are reached at: loopback,
// or on a cluster its host's.
func (a *RunningApp) Addr() string {
	if a.addr == "" {
		return "127.0.0.1"
	}
	return a.addr
}

// SidecarURL is the sidecar's HTTP API base, e.g. http://127.0.0.1:3500.
func (a *RunningApp) SidecarURL() string {
	return "http://" + a.Addr() + ":" + strconv.Itoa(a.HTTPPort)
}

// SidecarGRPC is the sidecar's gRPC API address.
func (a *RunningApp) SidecarGRPC() string { return a.Addr() + ":" + strconv.Itoa(a.GRPCPort) }

// AppURL is the app's own base URL.
func (a *RunningApp) AppURL() string { return "http://" + a.Addr() + ":" + strconv.Itoa(a.AppPort) }

// baseEnv is what every process of the stack inherits from the launcher.
func baseEnv() []string {
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, k := range []string{"GOCOVERDIR", "GORACE"} {
		if v := os.Getenv(k); v != "" {
			base = append(base, k+"="+v)
		}
	}
	return base
}

func (s *Stack) spawn(name, path string, args, env []string, dir string) (*proc.Process, error) {
	if dir == "" {
		dir = s.cfg.Root
	}
	return s.startProc(proc.Spec{
		Name:    name,
		Path:    path,
		Args:    args,
		Env:     append(baseEnv(), env...),
		Dir:     dir,
		LogFile: filepath.Join(s.cfg.RunDir, "logs", name+".log"),
		Out:     s.cfg.Out,
	})
}

// spawnAgain starts a process again as it was first started, its output
// appended to its log.
func (s *Stack) spawnAgain(spec proc.Spec) (*proc.Process, error) {
	spec.AppendLog = true
	return s.startProc(spec)
}

func (s *Stack) startProc(spec proc.Spec) (*proc.Process, error) {
	name := spec.Name
	p, err := proc.Start(spec)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	go func() {
		<-p.Done()
		if p.Stopping() {
			return
		}
		if s.supervised(name) { // a cluster's control plane: restarted, as Kubernetes would
			s.restartExited(name, p)
			return
		}
		select {
		case s.exits <- p.Exited():
		default:
		}
	}()
	return p, nil
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
	ip := a.Addr()
	listen := "127.0.0.1"
	if ip != listen { // on a cluster host: its own loopback (the app) and its address (the others, health checks)
		listen += "," + ip
	}
	placement, scheduler := s.controlPlaneAddrs()
	args := []string{
		"--app-id", a.ID,
		"--dapr-http-port", strconv.Itoa(a.HTTPPort),
		"--dapr-grpc-port", strconv.Itoa(a.GRPCPort),
		"--dapr-internal-grpc-port", strconv.Itoa(a.InternalGRPCPort),
		"--dapr-internal-grpc-listen-address", ip,
		"--dapr-listen-addresses", listen,
		"--metrics-port", strconv.Itoa(a.MetricsPort),
		"--metrics-listen-address", ip,
		"--resources-path", s.resources,
		"--config", s.configFile(a.ID),
		"--placement-host-address", placement,
		"--scheduler-host-address", scheduler,
		"--dapr-graceful-shutdown-seconds", "5",
		"--log-level", c.LogLevel,
	}
	secArgs, secEnv, err := s.sidecarSecurity(a.App)
	if err != nil {
		return err
	}
	args = append(args, secArgs...)
	if a.AppPort != 0 {
		args = append(args, "--app-port", strconv.Itoa(a.AppPort), "--app-protocol", "http")
	}
	args = append(args, a.DaprdArgs...)
	env := []string{
		"REDIS_HOST=" + s.RedisAddr,
		"SECRETS_FILE=" + c.SecretsFile,
		"DACA_ALLOWED_SECRETS=" + SecretsYAML(a.Secrets),
		"DACA_NAMERESOLUTION_DB=" + nrDB,
		"DACA_LLM_MAX_CONCURRENT=" + strconv.Itoa(c.LLMMaxConcurrent),
		"DAPR_HOST_IP=" + ip,
		"DAPR_API_TOKEN=" + s.APIToken,
		"DACA_HOT_RELOAD=" + strconv.FormatBool(a.HotReload),
	}
	if s.AppToken != "" {
		env = append(env, "APP_API_TOKEN="+s.AppToken)
	}
	if s.RabbitMQURL != "" {
		env = append(env, "RABBITMQ_URL="+s.RabbitMQURL)
	}
	if v := os.Getenv("REDIS_PASSWORD"); v != "" {
		env = append(env, "REDIS_PASSWORD="+v)
	}
	env = append(env, secEnv...)
	d, err := s.spawnOn(a.Host, a.Name+"-dapr", s.Bins.Daprd, args, env, c.RunDir)
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
		"DACA_HOT_RELOAD=" + strconv.FormatBool(a.HotReload),
	}
	if s.AppToken != "" {
		env = append(env, "APP_API_TOKEN="+s.AppToken)
	}
	if a.Host != "" { // its sidecar on the host's loopback, the others (and checks) at the host's address
		env = append(env, "APP_HOST=0.0.0.0")
	}
	return append(env, a.Env...)
}

func (s *Stack) startAppProcess(a *RunningApp) error {
	p, err := s.spawnOn(a.Host, a.Name, a.Command[0], a.Command[1:], s.AppEnv(a), a.Dir)
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

// configFile is the app's Dapr Configuration: components/config.yaml, or
// on a cluster its own with its access policy.
func (s *Stack) configFile(appID string) string {
	if f, ok := s.configs[appID]; ok {
		return f
	}
	return filepath.Join(s.resources, "config.yaml")
}
