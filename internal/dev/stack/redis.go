package stack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/daca-go/daca/internal/contract"
)

// ErrNoRedis is returned when redis-server is missing and cannot be installed.
var ErrNoRedis = errors.New("redis-server is not installed. Install it with `sudo apt-get install -y redis-server` " +
	"(Debian/Ubuntu), or set REDIS_ADDR=host:port to use a Redis you already run")

// EnsureRedisServer returns the path of redis-server, installing the Debian
// package with apt-get when it is missing and we run as root on Debian.
func EnsureRedisServer(ctx context.Context, progress func(string)) (string, error) {
	p, err := EnsureDebianPackage(ctx, "redis-server", "redis-server", progress)
	if errors.Is(err, errCannotInstall) {
		return "", ErrNoRedis
	}
	return p, err
}

var errCannotInstall = errors.New("cannot install")

// EnsureDebianPackage returns the path of the command bin, installing the
// Debian package pkg with apt-get when it is missing and we run as root on
// Debian (errCannotInstall otherwise).
func EnsureDebianPackage(ctx context.Context, pkg, bin string, progress func(string)) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	cannot := fmt.Errorf("%w: %s is not installed; install it with `sudo apt-get install -y %s`", errCannotInstall, bin, pkg)
	if os.Geteuid() != 0 {
		return "", cannot
	}
	if _, err := os.Stat("/etc/debian_version"); err != nil {
		return "", cannot
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "", cannot
	}
	progress(bin + " is missing: installing the Debian package " + pkg + " with apt-get")
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "--no-install-recommends", pkg)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get install %s: %w\n%s", pkg, err, tailOf(string(out), 10))
		}
		return nil
	}
	if err := install(); err != nil {
		progress("apt-get install failed; running apt-get update and trying again")
		upd := exec.CommandContext(ctx, "apt-get", "update")
		upd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := upd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get update: %w\n%s", err, tailOf(string(out), 10))
		}
		if err := install(); err != nil {
			return "", err
		}
	}
	return exec.LookPath(bin)
}

func tailOf(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (s *Stack) startRedis(ctx context.Context) error {
	c := &s.cfg
	bin, err := EnsureRedisServer(ctx, func(m string) { fmt.Fprintln(c.Progress, m) })
	if err != nil {
		return err
	}
	dir := filepath.Join(c.RunDir, "redis")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	host := ""
	if c.Cluster != nil {
		host = c.Cluster.Infra
	}
	args := []string{
		"--port", strconv.Itoa(c.RedisPort),
		"--bind", s.addr(host),
		"--protected-mode", protectedMode(c.Cluster == nil), // a cluster's Redis serves the other hosts (a bridge private to this machine)
		"--dir", dir,
		"--daemonize", "no",
		"--logfile", "",
	}
	if c.RedisPersist {
		args = append(args, "--save", "60 1", "--appendonly", "yes")
	} else {
		args = append(args, "--save", "", "--appendonly", "no")
	}
	p, err := s.spawnOn(host, "redis", bin, args, nil, dir)
	if err != nil {
		return err
	}
	s.Redis = p
	s.RedisAddr = s.addr(host) + ":" + strconv.Itoa(c.RedisPort)
	if err := waitFor(ctx, 20*time.Second, p, func() error { return redisPing(s.RedisAddr) }); err != nil {
		return fmt.Errorf("redis not ready: %w", err)
	}
	return nil
}

// redisConn is a connection to Redis speaking just enough RESP2 for the
// stack: PING and the consumer-group commands.
type redisConn struct {
	net.Conn
	r *bufio.Reader
}

// dialRedis connects to Redis at addr, authenticating with REDIS_PASSWORD
// when it is set; every command must answer within timeout.
func dialRedis(addr string, timeout time.Duration) (*redisConn, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(timeout))
	c := &redisConn{Conn: conn, r: bufio.NewReader(conn)}
	if pw := os.Getenv("REDIS_PASSWORD"); pw != "" {
		if _, err := c.do("AUTH", pw); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return c, nil
}

// do sends one command and reads its reply (see readReply).
func (c *redisConn) do(args ...string) (any, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return nil, err
	}
	return readReply(c.r)
}

// RedisDo runs one command on the stack's Redis and returns its reply (a
// string, an int64, nil or a []any), for tests that look at what the apps
// stored.
func (s *Stack) RedisDo(args ...string) (any, error) {
	c, err := dialRedis(s.RedisAddr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.do(args...)
}

// redisPing sends PING and expects PONG (or a NOAUTH error, which also means
// a Redis is there).
func redisPing(addr string) error {
	c, err := dialRedis(addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	reply, err := c.do("PING")
	var rerr redisError
	if reply == "PONG" || (errors.As(err, &rerr) && strings.HasPrefix(string(rerr), "NOAUTH")) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("redis at %s answered %q", addr, reply)
}

// pruneGatewayGroups removes the consumer groups named gateway-* from the
// gateway streams. Dapr never removes a group, and each gateway start makes
// new ones; the stack calls this on a Redis of its own before any gateway
// starts, when every such group is a leftover. It returns how many it
// removed.
func pruneGatewayGroups(addr string) (int, error) {
	c, err := dialRedis(addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	removed := 0
	for _, stream := range contract.Topics { // the gateway's consumer groups are on every topic
		reply, err := c.do("XINFO", "GROUPS", stream)
		var rerr redisError
		if errors.As(err, &rerr) && strings.Contains(string(rerr), "no such key") {
			continue // the topic has had no subscriber yet
		}
		if err != nil {
			return removed, fmt.Errorf("XINFO GROUPS %s: %w", stream, err)
		}
		groups, _ := reply.([]any)
		for _, g := range groups {
			fields, _ := g.([]any)
			for i := 0; i+1 < len(fields); i += 2 {
				if k, _ := fields[i].(string); k != "name" {
					continue
				}
				if name, _ := fields[i+1].(string); strings.HasPrefix(name, "gateway-") {
					if _, err := c.do("XGROUP", "DESTROY", stream, name); err != nil {
						return removed, fmt.Errorf("XGROUP DESTROY %s %s: %w", stream, name, err)
					}
					removed++
				}
			}
		}
	}
	return removed, nil
}

// redisError is an error reply of Redis.
type redisError string

func (e redisError) Error() string { return string(e) }

// readReply reads one RESP2 reply: a string, an int64, nil, a []any, or a
// redisError.
func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return nil, errors.New("redis: empty reply line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, redisError(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err // $-1: nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err // *-1: nil
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readReply(r); err != nil {
				var rerr redisError
				if !errors.As(err, &rerr) {
					return nil, err
				}
				out[i] = rerr
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("redis: unexpected reply %q", line)
}

func protectedMode(on bool) string {
	if on {
		return "yes"
	}
	return "no"
}
