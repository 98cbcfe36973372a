package stack

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

func (s *Stack) assignPorts() error {
	c := &s.cfg
	var fixed []namedPort
	add := func(name string, p *int) {
		if *p != 0 {
			fixed = append(fixed, namedPort{name, *p})
		}
	}
	if c.Cluster != nil && c.RedisPort == 0 { // on its own host: no port of this one to check
		c.RedisPort = clusterRedisPort
	}
	if c.RedisAddr == "" && c.Cluster == nil {
		add("redis", &c.RedisPort)
	}
	add("placement", &c.PlacementPort)
	add("scheduler", &c.SchedulerPort)
	for i := range c.Apps {
		a := &c.Apps[i]
		if a.Host != "" { // a cluster host's ports are its own (an app has the same on every host)
			continue
		}
		if a.Command != nil {
			add(a.Name+" app", &a.AppPort)
		}
		add(a.Name+" sidecar HTTP", &a.HTTPPort)
		add(a.Name+" sidecar gRPC", &a.GRPCPort)
		add(a.Name+" sidecar internal gRPC", &a.InternalGRPCPort)
		add(a.Name+" sidecar metrics", &a.MetricsPort)
	}
	if err := checkFree(fixed, c.PortWait, c.Progress); err != nil {
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

// PortInUseError names a port that is already taken, and what holds it.
type PortInUseError struct {
	Name   string
	Port   int
	Holder string // holderListener, holderConnection, holderClosed, or "" (unknown)
}

func (e *PortInUseError) Error() string {
	switch e.Holder {
	case holderConnection:
		return fmt.Sprintf("port %d (%s) is the local port of an open TCP connection, not of a listener: Linux hands out "+
			"32768-60999 to outgoing connections, and Dapr's default ports lie in that range; it is free again once that "+
			"connection closes, or choose another port (see `daca up -h`)", e.Port, e.Name)
	case holderClosed:
		return fmt.Sprintf("port %d (%s) is still held by closed connections (TIME_WAIT) after waiting; try again in a "+
			"minute, or choose another port (see `daca up -h`)", e.Port, e.Name)
	}
	return fmt.Sprintf("port %d (%s) is already in use; stop what uses it or choose another port (see `daca up -h`)", e.Port, e.Name)
}

// What can hold a port, as /proc/net/tcp tells.
const (
	holderListener   = "a listener"
	holderConnection = "an open connection"
	holderClosed     = "closed connections (TIME_WAIT)"
)

// checkFree checks that every configured port can be listened on. A port
// held by a listener fails at once; one held only by connections (an
// outgoing connection's local port, or TIME_WAIT after heavy use such as
// make bench) is waited for, up to wait, saying so on progress.
func checkFree(ports []namedPort, wait time.Duration, progress io.Writer) error {
	seen := map[int]string{}
	for _, p := range ports {
		if other, ok := seen[p.port]; ok {
			return fmt.Errorf("port %d is configured twice: %s and %s", p.port, other, p.name)
		}
		seen[p.port] = p.name
		deadline, said := time.Now().Add(wait), false
		for {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)))
			if err == nil {
				l.Close()
				break
			}
			holder := portHolder(p.port)
			if holder == "" || holder == holderListener || time.Now().After(deadline) {
				return &PortInUseError{Name: p.name, Port: p.port, Holder: holder}
			}
			if !said {
				fmt.Fprintf(progress, "stack: port %d (%s) is held by %s, not by a listener; waiting up to %s for it to be released\n",
					p.port, p.name, holder, wait.Round(time.Second))
				said = true
			}
			time.Sleep(time.Second) // the kernel releases it on its own schedule; nothing to wait on
		}
	}
	return nil
}

// portHolder says what holds loopback TCP port on this machine, from
// /proc/net/tcp and /proc/net/tcp6: a listener, an open connection using it
// as its local port, or only closed connections; "" when nothing does or
// it cannot be told.
func portHolder(port int) string {
	var states []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err == nil {
			states = append(states, tcpStates(string(b), port)...)
		}
	}
	return holderOf(states)
}

// tcpStates returns the states (hex, as the kernel writes them) of the
// sockets in a /proc/net/tcp table whose local port is port.
func tcpStates(table string, port int) []string {
	var out []string
	for _, line := range strings.Split(table, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil && int(p) == port {
			out = append(out, f[3])
		}
	}
	return out
}

// holderOf classifies socket states: 0A LISTEN; 06 TIME_WAIT, 07 CLOSE;
// the rest are connections in use.
func holderOf(states []string) string {
	h := ""
	for _, s := range states {
		switch s {
		case "0A":
			return holderListener
		case "06", "07":
			if h == "" {
				h = holderClosed
			}
		default:
			h = holderConnection
		}
	}
	return h
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
