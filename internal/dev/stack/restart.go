package stack

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/daca-go/daca/internal/dev/proc"
)

// process returns the started process with the name (redis, placement,
// scheduler, an app's name, or its sidecar's: <name>-dapr), the latest one
// when it was started again.
func (s *Stack) process(name string) *proc.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.procs) - 1; i >= 0; i-- {
		if s.procs[i].Spec.Name == name {
			return s.procs[i]
		}
	}
	return nil
}

// Kill kills a process of the stack at once (SIGKILL), as a crash would:
// redis, rabbitmq, placement, scheduler, an app (its name) or a sidecar (<name>-dapr).
func (s *Stack) Kill(name string) error {
	p := s.process(name)
	if p == nil {
		return fmt.Errorf("stack: no process %q", name)
	}
	p.Kill()
	return nil
}

// Restart starts a killed (or running: it is killed first) process of the
// stack again with the same command line, ports and data, and waits until
// it is ready.
func (s *Stack) Restart(ctx context.Context, name string) error {
	p, ready, err := s.respawn(name)
	if err != nil || ready == nil {
		return err
	}
	if err := waitFor(ctx, s.cfg.ReadyTimeout, p, ready); err != nil {
		return fmt.Errorf("%s not ready after its restart: %w", name, err)
	}
	return nil
}

// respawn starts a process again (killing it first when it runs) and
// returns it with its readiness check (nil: none).
func (s *Stack) respawn(name string) (*proc.Process, func() error, error) {
	old := s.process(name)
	if old == nil {
		return nil, nil, fmt.Errorf("stack: no process %q", name)
	}
	select {
	case <-old.Done():
	default:
		old.Kill()
	}
	spec := old.Spec
	p, err := s.spawnAgain(spec)
	if err != nil {
		return nil, nil, err
	}
	var ready func() error
	s.mu.Lock()
	cpReady, cp := s.controlPlaneReady(name, p)
	switch {
	case cp:
		ready = cpReady
	case name == "redis":
		s.Redis = p
		ready = func() error { return redisPing(s.RedisAddr) }
	case name == "rabbitmq":
		s.RabbitMQ = p
		ready = func() error { return amqpUp(s.rabbitPort) }
	case name == "placement":
		s.Placement = p
		ready = func() error { return httpOK(fmt.Sprintf("http://127.0.0.1:%d/healthz", s.placementHealthz)) }
	case name == "scheduler":
		s.Scheduler = p
		ready = func() error { return httpOK(fmt.Sprintf("http://127.0.0.1:%d/healthz", s.schedulerHealthz)) }
	default:
		for _, a := range s.apps {
			switch name {
			case a.Name + "-dapr":
				a.Daprd = p
				url := a.SidecarURL() + "/v1.0/healthz"
				ready = func() error { return httpOK(url) }
			case a.Name:
				a.AppCmd = p
				if a.HealthPath != "" {
					url := a.AppURL() + a.HealthPath
					ready = func() error { return httpOK(url) }
				}
			}
		}
	}
	s.mu.Unlock()
	return p, ready, nil
}

// RestartAfter kills the process, waits down (the outage), and starts it
// again; it returns when the process is ready, with the time the restart
// began.
func (s *Stack) RestartAfter(ctx context.Context, name string, down time.Duration) (time.Time, error) {
	if err := s.Kill(name); err != nil {
		return time.Time{}, err
	}
	select {
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	case <-time.After(down):
	}
	at := time.Now()
	return at, s.Restart(ctx, name)
}

// RestartGracefully restarts an app with its sidecar as Kubernetes restarts
// a pod in a rollout: both are asked to stop at once (SIGTERM, as the
// kubelet tells a pod's containers; each killed after grace), then both
// start again with the same command lines, and it returns once both are
// ready, with how long the two took to stop.
func (s *Stack) RestartGracefully(ctx context.Context, app string, grace time.Duration) (stopping time.Duration, err error) {
	a := s.App(app)
	if a == nil {
		return 0, fmt.Errorf("stack: no app %q", app)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, n := range []string{a.Name, a.Name + "-dapr"} {
		p := s.process(n)
		if p == nil {
			return 0, fmt.Errorf("stack: no process %q", n)
		}
		wg.Go(func() { p.Stop(grace) })
	}
	wg.Wait()
	stopping = time.Since(start)
	return stopping, s.respawnAll(ctx, []string{a.Name, a.Name + "-dapr"})
}

// respawnAll starts processes again, all of them first (a sidecar is ready
// only once its app is), then waits until each is ready.
func (s *Stack) respawnAll(ctx context.Context, names []string) error {
	type started struct {
		p     *proc.Process
		ready func() error
	}
	var all []started
	for _, n := range names {
		p, ready, err := s.respawn(n)
		if err != nil {
			return err
		}
		all = append(all, started{p, ready})
	}
	for _, st := range all {
		if st.ready == nil {
			continue
		}
		if err := waitFor(ctx, s.cfg.ReadyTimeout, st.p, st.ready); err != nil {
			return fmt.Errorf("%s not ready after its restart: %w", st.p.Spec.Name, err)
		}
	}
	return nil
}
