package stack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
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
	args := []string{
		"--port", strconv.Itoa(c.RedisPort),
		"--bind", "127.0.0.1",
		"--protected-mode", "yes",
		"--dir", dir,
		"--daemonize", "no",
		"--logfile", "",
	}
	if c.RedisPersist {
		args = append(args, "--save", "60 1", "--appendonly", "yes")
	} else {
		args = append(args, "--save", "", "--appendonly", "no")
	}
	p, err := s.spawn("redis", bin, args, nil, dir)
	if err != nil {
		return err
	}
	s.Redis = p
	s.RedisAddr = "127.0.0.1:" + strconv.Itoa(c.RedisPort)
	if err := waitFor(ctx, 20*time.Second, p, func() error { return redisPing(s.RedisAddr) }); err != nil {
		return fmt.Errorf("redis not ready: %w", err)
	}
	return nil
}

// redisPing sends PING and expects PONG (or a NOAUTH error, which also means
// a Redis is there).
func redisPing(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if pw := os.Getenv("REDIS_PASSWORD"); pw != "" {
		fmt.Fprintf(conn, "*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(pw), pw)
		if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil {
			return err
		}
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH") {
		return nil
	}
	return fmt.Errorf("redis at %s answered %q", addr, strings.TrimSpace(line))
}
