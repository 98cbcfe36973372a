package stack

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

func (s *Stack) startPlacement() error {
	c := &s.cfg
	raft, err := freePort()
	if err != nil {
		return err
	}
	metrics, err := freePort()
	if err != nil {
		return err
	}
	p, err := s.spawn("placement", s.Bins.Placement, []string{
		"--port", strconv.Itoa(c.PlacementPort),
		"--listen-address", "127.0.0.1",
		"--healthz-port", strconv.Itoa(s.placementHealthz),
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
	var extra [3]int
	for i := range extra {
		p, err := freePort()
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
		"--healthz-port", strconv.Itoa(s.schedulerHealthz),
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
