// Package netns makes hosts on this machine: Linux network namespaces, each
// with its own address on one bridge, built with iproute2 (needs root). A
// process started with a Host's Command runs "on" that host: it listens on
// the host's address and reaches the others across the bridge, and taking
// the host's link down cuts it off (a partition, not a crash).
//
// Names carry the network's prefix (namespaces <prefix>-h<n>, links
// <prefix>-br, <prefix>-v<n>), so Remove — or Cleanup, for what a killed
// run left behind — finds everything a network made.
package netns

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Network is a bridge and the hosts on it.
type Network struct {
	Prefix string // at most 8 characters: link names are limited to 15
	Subnet string // the first three octets, e.g. 10.77.0: hosts are .1, .2, …; the bridge .254
	Hosts  []*Host
}

// Host is one network namespace with its address.
type Host struct {
	Name string // h1, h2, …
	NS   string // the namespace: <prefix>-h<n>
	Addr string // its IPv4 address on the bridge
	link string // the bridge's end of its veth pair (root namespace)
}

// Bridge is the address of the bridge (the root namespace) on the network:
// a process outside the hosts reaches them from there.
func (n *Network) Bridge() string { return n.Subnet + ".254" }

// Available reports why hosts cannot be made here, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("netns: network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("netns: iproute2's ip is not installed (apt-get install iproute2)")
	}
	return nil
}

// Create makes a bridge and n hosts on it, after removing what an earlier
// network with the prefix left behind.
func Create(prefix, subnet string, n int) (*Network, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if len(prefix) == 0 || len(prefix) > 8 || strings.ContainsAny(prefix, " /") {
		return nil, fmt.Errorf("netns: prefix %q: want 1 to 8 characters", prefix)
	}
	if n < 1 || n > 200 {
		return nil, fmt.Errorf("netns: %d hosts: want 1 to 200", n)
	}
	if err := Cleanup(prefix); err != nil {
		return nil, err
	}
	net := &Network{Prefix: prefix, Subnet: subnet}
	br := prefix + "-br"
	steps := [][]string{
		{"link", "add", br, "type", "bridge"},
		{"addr", "add", net.Bridge() + "/24", "dev", br},
		{"link", "set", br, "up"},
	}
	for i := 1; i <= n; i++ {
		h := &Host{Name: fmt.Sprintf("h%d", i), NS: fmt.Sprintf("%s-h%d", prefix, i), Addr: fmt.Sprintf("%s.%d", subnet, i), link: fmt.Sprintf("%s-v%d", prefix, i)}
		peer := fmt.Sprintf("%s-p%d", prefix, i)
		net.Hosts = append(net.Hosts, h)
		steps = append(steps,
			[]string{"netns", "add", h.NS},
			[]string{"link", "add", h.link, "type", "veth", "peer", "name", peer},
			[]string{"link", "set", peer, "netns", h.NS},
			[]string{"-n", h.NS, "link", "set", peer, "name", "eth0"},
			[]string{"-n", h.NS, "addr", "add", h.Addr + "/24", "dev", "eth0"},
			[]string{"-n", h.NS, "link", "set", "eth0", "up"},
			[]string{"-n", h.NS, "link", "set", "lo", "up"},
			[]string{"-n", h.NS, "route", "add", "default", "via", net.Bridge()},
			[]string{"link", "set", h.link, "master", br},
			[]string{"link", "set", h.link, "up"},
		)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			_ = net.Remove()
			return nil, err
		}
	}
	return net, nil
}

// Host returns the host named name (h1, h2, …), or nil.
func (n *Network) Host(name string) *Host {
	for _, h := range n.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// Remove deletes the network's hosts and bridge.
func (n *Network) Remove() error { return Cleanup(n.Prefix) }

// Command is how to run path with args on the host: ip netns exec, which
// execs the program itself (its pid is the program's, signals reach it).
func (h *Host) Command(path string, args ...string) (string, []string) {
	return "ip", append([]string{"netns", "exec", h.NS, path}, args...)
}

// Cut takes the host's link down: it reaches nobody and nobody reaches it,
// its processes keep running.
func (h *Host) Cut() error { return ip("link", "set", h.link, "down") }

// Restore brings the host's link back up.
func (h *Host) Restore() error { return ip("link", "set", h.link, "up") }

// Cleanup removes every namespace and link whose name starts with
// prefix + "-": what a network with that prefix made, also when its run
// was killed.
func Cleanup(prefix string) error {
	if err := Available(); err != nil {
		return err
	}
	var errs []error
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("netns: ip netns list: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if strings.HasPrefix(name, prefix+"-") {
			if err := ip("netns", "delete", name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	out, err = exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		return fmt.Errorf("netns: ip link show: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line) // "7: name@peer: <...>"
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, prefix+"-") {
			if err := ip("link", "delete", name); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func ip(args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("netns: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
