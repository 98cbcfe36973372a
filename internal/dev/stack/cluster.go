package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/daca-go/daca/internal/dev/netns"
	"github.com/daca-go/daca/internal/dev/proc"
)

// Cluster lays a stack out on hosts (Linux network namespaces, see
// internal/dev/netns), as a production deployment is: Dapr's control plane
// in its highly available form — a placement server and a scheduler on each
// of ControlPlane's hosts (three: a Raft group, an embedded etcd cluster) —
// Redis and sentry on the Infra host, and every sidecar with its SPIFFE
// identity from sentry, mTLS on between all of them. Each App names its
// host (App.Host); an app runs on the same ports on every host, as in a pod.
type Cluster struct {
	Net          *netns.Network
	ControlPlane []string // hosts with a placement server and a scheduler each
	Infra        string   // the host of Redis and sentry
	Sentry       string   // the sentry binary (toolchain.EnsureSentry)
}

// The control plane's ports on each of its hosts.
const (
	sentryPort          = 50001
	sentryHealthz       = 9080
	placementPort       = 50005
	placementRaft       = 8201
	placementHealthz    = 9081
	placementMetrics    = 9091
	schedulerPort       = 50006
	schedulerHealthz    = 9082
	schedulerEtcdClient = 2379
	schedulerEtcdPeer   = 2380
	clusterRedisPort    = 6379
	trustDomain         = "localhost" // the control plane's, as Dapr's standalone default
	// clusterNamespace is the apps' namespace, in their SPIFFE ids
	// (spiffe://public/ns/daca/<app id>): the Kubernetes deployment's, which
	// its access policies name.
	clusterNamespace = "daca"
	// controlPlaneNamespace is the namespace of sentry, the placement
	// servers and the schedulers (Kubernetes' dapr-system).
	controlPlaneNamespace = "default"
)

// host returns the cluster's host named name; nil off a cluster.
func (s *Stack) host(name string) *netns.Host {
	if s.cfg.Cluster == nil || name == "" {
		return nil
	}
	return s.cfg.Cluster.Net.Host(name)
}

// Host is the cluster's host named name (its link can be cut); nil off a
// cluster.
func (s *Stack) Host(name string) *netns.Host { return s.host(name) }

// addr is the address a process on the host listens on and is reached at:
// loopback off a cluster.
func (s *Stack) addr(host string) string {
	if h := s.host(host); h != nil {
		return h.Addr
	}
	return "127.0.0.1"
}

// spawnOn starts a process on a host of the cluster (or here, off one).
func (s *Stack) spawnOn(host, name, path string, args, env []string, dir string) (*proc.Process, error) {
	if h := s.host(host); h != nil {
		path, args = h.Command(path, args...)
		s.mu.Lock()
		if s.hostOf == nil {
			s.hostOf = map[string]string{}
		}
		if _, ok := s.hostOf[name]; !ok {
			s.order = append(s.order, name)
		}
		s.hostOf[name] = host
		s.mu.Unlock()
	}
	return s.spawn(name, path, args, env, dir)
}

// HostProcesses are the names of the processes on a cluster host, in the
// order they started.
func (s *Stack) HostProcesses(host string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, n := range s.order {
		if s.hostOf[n] == host {
			out = append(out, n)
		}
	}
	return out
}

// KillHost kills every process on a cluster host at once (SIGKILL): the
// host is lost. It returns their names.
func (s *Stack) KillHost(host string) ([]string, error) {
	names := s.HostProcesses(host)
	if len(names) == 0 {
		return nil, fmt.Errorf("stack: no process on host %q", host)
	}
	var errs []error
	for _, n := range names {
		if p := s.process(n); p != nil {
			p.Kill()
		} else {
			errs = append(errs, fmt.Errorf("stack: no process %q", n))
		}
	}
	return names, errors.Join(errs...)
}

// RestartHost starts every process of a host again, in the order they
// first started, then waits until each is ready. As at the first start, an
// app that others wait for (App.WaitReady: the tool server, whose tools
// chat-service's sidecar discovers when it starts) is ready before the
// processes after it start.
func (s *Stack) RestartHost(ctx context.Context, host string) error {
	var batch []string
	for _, n := range s.HostProcesses(host) {
		batch = append(batch, n)
		if a := s.App(n); a != nil && a.WaitReady {
			if err := s.respawnAll(ctx, batch); err != nil {
				return err
			}
			batch = nil
		}
	}
	return s.respawnAll(ctx, batch)
}

// controlPlaneReady is the readiness check of a cluster's placement or
// scheduler (placement-<host>, scheduler-<host>) and records its new
// process; ok is false for another name.
func (s *Stack) controlPlaneReady(name string, p *proc.Process) (ready func() error, ok bool) {
	if s.cfg.Cluster == nil {
		return nil, false
	}
	for i, h := range s.cfg.Cluster.ControlPlane {
		switch name {
		case "placement-" + h:
			s.Placements[i] = p
			url := fmt.Sprintf("http://%s:%d/healthz", s.addr(h), placementHealthz)
			return func() error { return httpOK(url) }, true
		case "scheduler-" + h:
			s.Schedulers[i] = p
			url := fmt.Sprintf("http://%s:%d/healthz", s.addr(h), schedulerHealthz)
			return func() error { return httpOK(url) }, true
		}
	}
	return nil, false
}

func (c *Cluster) check() error {
	if c.Net == nil || len(c.ControlPlane) == 0 || c.Infra == "" || c.Sentry == "" {
		return fmt.Errorf("stack: a cluster needs its network, control plane hosts, infra host and sentry")
	}
	for _, h := range append([]string{c.Infra}, c.ControlPlane...) {
		if c.Net.Host(h) == nil {
			return fmt.Errorf("stack: cluster host %q is not on the network", h)
		}
	}
	return nil
}

// startSentry starts sentry on the infra host: it makes its root and
// issuer certificates in the run directory; their root is every process's
// trust anchor.
func (s *Stack) startSentry(ctx context.Context) error {
	c := s.cfg.Cluster
	dir := filepath.Join(s.cfg.RunDir, "sentry")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Its own Configuration (Kubernetes' daprsystem): mTLS on, certificates
	// for a day, renewed by the sidecars before they expire, and issued
	// only to a process with a token for its identity (sentrytoken.go).
	var err error
	if s.tokens, err = newIssuer(filepath.Join(s.cfg.RunDir, "sentry-tokens")); err != nil {
		return err
	}
	conf := filepath.Join(s.cfg.RunDir, "sentry-config.yaml")
	if err := os.WriteFile(conf, []byte(`apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: daprsystem
spec:
  mtls:
    enabled: true
    workloadCertTTL: 24h
    allowedClockSkew: 15m
    tokenValidators:
      - name: jwks
        options:
          source: '`+s.tokens.JWKS()+`'
`), 0o644); err != nil {
		return err
	}
	ip := s.addr(c.Infra)
	p, err := s.spawnOn(c.Infra, "sentry", c.Sentry, []string{
		"--config", conf,
		"--port", strconv.Itoa(sentryPort),
		"--listen-address", ip,
		"--healthz-port", strconv.Itoa(sentryHealthz),
		"--healthz-listen-address", ip,
		"--metrics-port", "9090",
		"--metrics-listen-address", ip,
		"--issuer-credentials", dir,
		"--trust-domain", trustDomain,
		"--mode", "standalone",
		"--log-level", s.cfg.LogLevel,
	}, []string{"NAMESPACE=" + controlPlaneNamespace}, s.cfg.RunDir)
	if err != nil {
		return err
	}
	s.Sentry = p
	url := fmt.Sprintf("http://%s:%d/healthz", ip, sentryHealthz)
	if err := waitFor(ctx, s.cfg.ReadyTimeout, p, func() error { return httpOK(url) }); err != nil {
		return fmt.Errorf("sentry not ready: %w", err)
	}
	s.trustAnchors = filepath.Join(dir, "ca.crt")
	if _, err := os.Stat(s.trustAnchors); err != nil {
		return fmt.Errorf("sentry made no root certificate: %w", err)
	}
	// Sentry's first start writes the root and issuer into dir, and its
	// watch of dir then reloads them about 2 s later, closing its server
	// for a moment ("Issuer credentials changed; reloading"): a sidecar
	// that asks for its identity then is refused and exits (seen in make
	// test). So the sentry that serves starts again, from what the first
	// one wrote: nothing written, nothing to reload.
	if p, _, err = s.respawn("sentry"); err != nil {
		return err
	}
	s.Sentry = p
	if err := waitFor(ctx, s.cfg.ReadyTimeout, p, func() error { return httpOK(url) }); err != nil {
		return fmt.Errorf("sentry not ready after its second start: %w", err)
	}
	return nil
}

// SentryTokens is the directory of the tokens sentry takes (one per
// process), "" when not a cluster.
func (s *Stack) SentryTokens() string {
	if s.tokens == nil {
		return ""
	}
	return s.tokens.dir
}

// SentryAddress is sentry's gRPC address on a cluster.
func (s *Stack) SentryAddress() string {
	return fmt.Sprintf("%s:%d", s.addr(s.cfg.Cluster.Infra), sentryPort)
}

// sentryAudience is sentry's identity, which the tokens it takes name.
var sentryAudience = spiffeID(trustDomain, controlPlaneNamespace, "dapr-sentry")

// mtlsArgs are the flags and environment of a control plane process (app
// id dapr-placement or dapr-scheduler) that takes its identity from
// sentry.
func (s *Stack) mtlsArgs(appID string) (args, env []string, err error) {
	token, err := s.tokens.file(spiffeID(trustDomain, controlPlaneNamespace, appID), sentryAudience)
	if err != nil {
		return nil, nil, err
	}
	return []string{
		"--tls-enabled",
		"--sentry-address", s.SentryAddress(),
		"--trust-anchors-file", s.trustAnchors,
		"--trust-domain", trustDomain,
		"--mode", "standalone",
	}, []string{"NAMESPACE=" + controlPlaneNamespace, "DAPR_SENTRY_TOKEN_FILE=" + token}, nil
}

// startHAControlPlane starts a placement server and a scheduler on each
// control plane host, in their Raft group and etcd cluster, and waits
// until each answers.
func (s *Stack) startHAControlPlane(ctx context.Context) error {
	c := s.cfg.Cluster
	var raft, etcd []string
	for i, h := range c.ControlPlane {
		raft = append(raft, fmt.Sprintf("dapr-placement-%d=%s:%d", i, s.addr(h), placementRaft))
		etcd = append(etcd, fmt.Sprintf("dapr-scheduler-server-%d=http://%s:%d", i, s.addr(h), schedulerEtcdPeer))
	}
	type ready struct {
		p   *proc.Process
		url string
	}
	var wait []ready
	for i, h := range c.ControlPlane {
		ip := s.addr(h)
		pArgs, pEnv, err := s.mtlsArgs("dapr-placement")
		if err != nil {
			return err
		}
		p, err := s.spawnOn(h, "placement-"+h, s.Bins.Placement, append([]string{
			"--id", fmt.Sprintf("dapr-placement-%d", i),
			"--port", strconv.Itoa(placementPort),
			"--listen-address", ip,
			"--healthz-port", strconv.Itoa(placementHealthz),
			"--healthz-listen-address", ip,
			"--metrics-port", strconv.Itoa(placementMetrics),
			"--metrics-listen-address", ip,
			"--initial-cluster", strings.Join(raft, ","),
			"--log-level", s.cfg.LogLevel,
		}, pArgs...), pEnv, s.cfg.RunDir)
		if err != nil {
			return err
		}
		s.Placements = append(s.Placements, p)
		wait = append(wait, ready{p, fmt.Sprintf("http://%s:%d/healthz", ip, placementHealthz)})
		data := filepath.Join(s.cfg.RunDir, "scheduler-"+h)
		if err := os.MkdirAll(data, 0o755); err != nil {
			return err
		}
		sArgs, sEnv, err := s.mtlsArgs("dapr-scheduler")
		if err != nil {
			return err
		}
		p, err = s.spawnOn(h, "scheduler-"+h, s.Bins.Scheduler, append([]string{
			"--id", fmt.Sprintf("dapr-scheduler-server-%d", i),
			"--port", strconv.Itoa(schedulerPort),
			"--listen-address", ip,
			"--override-broadcast-host-port", fmt.Sprintf("%s:%d", ip, schedulerPort),
			"--healthz-port", strconv.Itoa(schedulerHealthz),
			"--healthz-listen-address", ip,
			"--metrics-port", "9092",
			"--metrics-listen-address", ip,
			"--etcd-data-dir", data,
			"--etcd-client-port", strconv.Itoa(schedulerEtcdClient),
			"--etcd-client-listen-address", ip,
			"--etcd-initial-cluster", strings.Join(etcd, ","),
			"--identity-directory-write", filepath.Join(data, "tls"),
			"--log-level", s.cfg.LogLevel,
		}, sArgs...), sEnv, s.cfg.RunDir)
		if err != nil {
			return err
		}
		s.Schedulers = append(s.Schedulers, p)
		wait = append(wait, ready{p, fmt.Sprintf("http://%s:%d/healthz", ip, schedulerHealthz)})
	}
	for _, w := range wait {
		if err := waitFor(ctx, s.cfg.ReadyTimeout, w.p, func() error { return httpOK(w.url) }); err != nil {
			return fmt.Errorf("%s not ready: %w", w.p.Spec.Name, err)
		}
	}
	s.Placement, s.Scheduler = s.Placements[0], s.Schedulers[0]
	return nil
}

// controlPlaneAddrs are the placement and scheduler addresses a sidecar
// is given: all of them on a cluster.
func (s *Stack) controlPlaneAddrs() (placement, scheduler string) {
	if s.cfg.Cluster == nil {
		return fmt.Sprintf("127.0.0.1:%d", s.cfg.PlacementPort), fmt.Sprintf("127.0.0.1:%d", s.cfg.SchedulerPort)
	}
	var p, sc []string
	for _, h := range s.cfg.Cluster.ControlPlane {
		p = append(p, fmt.Sprintf("%s:%d", s.addr(h), placementPort))
		sc = append(sc, fmt.Sprintf("%s:%d", s.addr(h), schedulerPort))
	}
	return strings.Join(p, ","), strings.Join(sc, ",")
}

// sidecarSecurity is what a sidecar on a cluster adds: mTLS with its
// identity from sentry (flags, environment), and the token that identity
// takes (a.Token).
func (s *Stack) sidecarSecurity(a App) (args, env []string, err error) {
	if s.cfg.Cluster == nil {
		return nil, nil, nil
	}
	ta, err := os.ReadFile(s.trustAnchors)
	if err != nil {
		return nil, nil, err
	}
	env = []string{"DAPR_TRUST_ANCHORS=" + string(ta), "NAMESPACE=" + clusterNamespace}
	if a.Token != NoToken {
		claims := a.ID
		if a.Token != "" {
			claims = a.Token
		}
		// Sidecars ask for an identity in the trust domain of their
		// Configuration's access control, public (as in the manifests).
		token, err := s.tokens.file(spiffeID("public", clusterNamespace, claims), sentryAudience)
		if err != nil {
			return nil, nil, err
		}
		env = append(env, "DAPR_SENTRY_TOKEN_FILE="+token)
	}
	return []string{"--enable-mtls", "--sentry-address", s.SentryAddress(), "--control-plane-trust-domain", trustDomain}, env, nil
}

// ClusterApps is every app of System on each host, on the tutorial's ports
// (the same on every host, as in a pod), named <app>-<host>, with env.
func ClusterApps(hosts []string, env ...string) []App {
	var out []App
	for _, h := range hosts {
		for _, d := range System {
			a := d.Named(d.ID+"-"+h, env...)
			a.Host, a.AppPort, a.HTTPPort, a.GRPCPort = h, d.Port, d.HTTPPort, d.GRPCPort
			out = append(out, a)
		}
	}
	return out
}

// accessPolicies is where the Kubernetes deployment's per-app
// Configurations are: a cluster's sidecars run with the same access
// control (one source).
var accessPolicies = filepath.Join("deploy", "k8s", "base", "dapr", "configuration.yaml")

// clusterConfigs writes a Configuration per app into the resources
// directory: components/config.yaml with the app's accessControl from the
// Kubernetes manifests (its Configuration is daca-config-<Def.Short>). It
// returns each app id's file.
func clusterConfigs(root, resources string) (map[string]string, error) {
	base, err := os.ReadFile(filepath.Join(resources, "config.yaml"))
	if err != nil {
		return nil, err
	}
	k8s, err := os.ReadFile(filepath.Join(root, accessPolicies))
	if err != nil {
		return nil, err
	}
	acl := map[string]any{} // Configuration name → its accessControl
	dec := yaml.NewDecoder(bytes.NewReader(k8s))
	for {
		var doc struct {
			Metadata struct{ Name string }
			Spec     struct {
				AccessControl any `yaml:"accessControl"`
			}
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", accessPolicies, err)
		}
		acl[doc.Metadata.Name] = doc.Spec.AccessControl
	}
	out := map[string]string{}
	for _, d := range System {
		policy := acl["daca-config-"+d.Short]
		if policy == nil {
			return nil, fmt.Errorf("%s: no accessControl for %s (daca-config-%s)", accessPolicies, d.ID, d.Short)
		}
		// Appended to the text as it is (spec is its last key): its
		// ${VARIABLES} are the sidecar's to expand.
		b, err := yaml.Marshal(map[string]any{"accessControl": policy})
		if err != nil {
			return nil, err
		}
		if _, after, ok := bytes.Cut(base, []byte("\nspec:\n")); !ok || regexp.MustCompile(`(?m)^[^\s#]`).Match(after) {
			return nil, errors.New("components/config.yaml: spec must be its last key (the access policy is appended to it)")
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		for i, l := range lines {
			lines[i] = "  " + l
		}
		b = append(append(bytes.TrimRight(append([]byte(nil), base...), "\n"), '\n'), strings.Join(lines, "\n")+"\n"...)
		path := filepath.Join(resources, "config-"+d.ID+".yaml")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return nil, err
		}
		out[d.ID] = path
	}
	return out, nil
}

// supervised reports whether a process that exits on its own is started
// again rather than reported: on a cluster, every process of an app host —
// the placement servers and schedulers (Dapr's placement exits when it
// loses Raft leadership, and counts on its supervisor to start it again),
// the apps and their sidecars (chat-service shuts its sidecar down when no
// workflow runs on it, for Kubernetes to start it again) — as Kubernetes
// restarts a pod's containers. Redis, sentry and apps started later
// (StartApp) are not. A test that counts on it reads Supervised; the
// cluster tests fail a run that restarted an app no test expected to.
func (s *Stack) supervised(name string) bool {
	if s.cfg.Cluster == nil {
		return false
	}
	if strings.HasPrefix(name, "placement-") || strings.HasPrefix(name, "scheduler-") {
		return true
	}
	for _, a := range s.cfg.Apps {
		n := a.Name
		if n == "" {
			n = a.ID
		}
		if name == n || name == n+"-dapr" {
			return true
		}
	}
	return false
}

// restartExited starts a supervised process that exited on its own again,
// after a second, and counts it (Supervised).
func (s *Stack) restartExited(name string, p *proc.Process) {
	fmt.Fprintf(s.cfg.Progress, "stack: %s exited on its own (%v): starting it again, as Kubernetes would\n", name, p.Err())
	if tail := p.Tail(); len(tail) > 0 {
		fmt.Fprintf(s.cfg.Progress, "stack: %s's last line: %s\n", name, tail[len(tail)-1])
	}
	s.mu.Lock()
	if s.supervisedRestarts == nil {
		s.supervisedRestarts = map[string]int{}
	}
	s.supervisedRestarts[name]++
	s.mu.Unlock()
	time.Sleep(time.Second)   // a crash loop's back-off
	if s.process(name) != p { // started again meanwhile (Restart)
		return
	}
	if _, _, err := s.respawn(name); err != nil {
		fmt.Fprintf(s.cfg.Progress, "stack: starting %s again: %v\n", name, err)
	}
}

// Supervised is how often each supervised process exited on its own and
// was started again.
func (s *Stack) Supervised() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.supervisedRestarts {
		out[k] = v
	}
	return out
}
