package stack

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
)

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
	reserve(fixed)
	pick := func(p *int) error {
		if *p != 0 {
			return nil
		}
		v, err := freePort()
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
	errs = append(errs, pick(&s.placementHealthz), pick(&s.schedulerHealthz))
	return errors.Join(errs...)
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

// reserve marks the configured ports as taken, so freePort never hands
// them out in this process.
func reserve(ports []namedPort) {
	portMu.Lock()
	defer portMu.Unlock()
	for _, p := range ports {
		portsUsed[p.port] = true
	}
}

var (
	portMu    sync.Mutex
	portsUsed = map[int]bool{}
)

// freePort returns a free loopback port that this process has not handed out
// or reserved before: the one way the stack chooses a port it was not given.
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
