package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ownTime is what a proxy (the gateway, the bare hop) adds by itself to
// requests made one at a time, read off the loopback packets' timestamps:
// from the last packet of a client's request to the first packet of the
// proxy's call to its sidecar (before), and from the last packet of the
// sidecar's answer to the first packet of the proxy's answer (after). The
// sidecar's and the backend's time, the bulk and the noise of the
// end-to-end latency, are left out.
type ownTime struct {
	before, after, total []time.Duration // sorted
}

// ownTimes parses `tcpdump -nn -tt -q` lines of one proxy's traffic: its
// clients on port front, its calls to any of the ports back (its sidecar's
// HTTP and gRPC APIs). Requests are matched in
// sequence (one client, one request at a time); packets without payload
// are ignored, and so is a request of another peer (the sidecar delivering
// an event to the gateway) that never reaches the sidecar.
func ownTimes(r io.Reader, front int, back ...int) ownTime {
	const (
		idle = iota
		request
		call
		answer
	)
	var (
		o                   ownTime
		state               = idle
		peer                string
		tReq, tCall, tReply float64
	)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// 1796225307.164293 IP 127.0.0.1.33914 > 127.0.0.1.8080: tcp 119
		f := strings.Fields(sc.Text())
		if len(f) < 7 || f[1] != "IP" || f[5] != "tcp" {
			continue
		}
		if n, err := strconv.Atoi(f[6]); err != nil || n == 0 {
			continue
		}
		t, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		src, dst := f[2], strings.TrimSuffix(f[4], ":")
		switch sp, dp := port(src), port(dst); {
		case dp == front && (state == idle || state == request):
			if state == request && src != peer {
				continue
			}
			state, peer, tReq = request, src, t // the request's last packet so far
		case slices.Contains(back, dp) && state == request:
			state, tCall = call, t
		case slices.Contains(back, sp) && (state == call || state == answer):
			state, tReply = answer, t // the answer's last packet so far
		case sp == front && state == answer && dst == peer:
			before, after := seconds(tCall-tReq), seconds(t-tReply)
			o.before, o.after, o.total = append(o.before, before), append(o.after, after), append(o.total, before+after)
			state = idle
		case sp == front && state == request && dst == peer:
			state = idle // answered without a call (an event delivered by the sidecar)
		}
	}
	for _, s := range [][]time.Duration{o.before, o.after, o.total} {
		slices.Sort(s)
	}
	return o
}

func port(hostPort string) int {
	i := strings.LastIndexByte(hostPort, '.')
	n, _ := strconv.Atoi(hostPort[i+1:])
	return n
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// capture records the loopback packets of the given ports with tcpdump
// while run runs, and returns tcpdump's lines. errNoCapture: tcpdump is
// missing or may not capture (not root).
func capture(ctx context.Context, ports []int, run func()) (string, error) {
	if _, err := exec.LookPath("tcpdump"); err != nil || os.Geteuid() != 0 {
		return "", errNoCapture
	}
	var filter []string
	for _, p := range ports {
		filter = append(filter, "tcp port "+strconv.Itoa(p))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, "tcpdump", "-i", "lo", "-nn", "-tt", "-q", "-l", "-s", "96", strings.Join(filter, " or "))
	var out strings.Builder
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("%w: %v", errNoCapture, err)
	}
	// tcpdump says "listening on lo" once it captures.
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		ok := false
		for sc.Scan() {
			if !ok && strings.Contains(sc.Text(), "listening on") {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			cmd.Wait()
			return "", errNoCapture
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		return "", errNoCapture
	}
	run()
	cmd.Process.Signal(os.Interrupt) // tcpdump writes what it has and exits
	cmd.Wait()
	return out.String(), nil
}

var errNoCapture = errors.New("tcpdump cannot capture here (missing, or not root)")
