package stack

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/daca-go/daca/internal/dev/proc"
)

// Row is one line of the status table.
type Row struct {
	Process string
	PID     int
	Ports   string
	Ready   bool
}

// Status lists every process of the stack with its ports. A process is
// ready when it is running: Start only returns once every part answered its
// readiness check.
func (s *Stack) Status() []Row {
	var rows []Row
	add := func(p *proc.Process, ports string) {
		if p == nil {
			return
		}
		ready := true
		select {
		case <-p.Done():
			ready = false
		default:
		}
		rows = append(rows, Row{Process: p.Spec.Name, PID: p.Pid(), Ports: ports, Ready: ready})
	}
	c := s.cfg
	if s.Redis != nil && c.Cluster != nil {
		add(s.Redis, s.RedisAddr)
	} else if s.Redis != nil {
		add(s.Redis, strconv.Itoa(c.RedisPort))
	}
	add(s.Epmd, strconv.Itoa(s.epmdPort))
	add(s.RabbitMQ, fmt.Sprintf("amqp %d", s.rabbitPort))
	if c.Cluster != nil {
		add(s.Sentry, fmt.Sprintf("%s grpc %d", s.addr(c.Cluster.Infra), sentryPort))
		for i, h := range c.Cluster.ControlPlane {
			if i < len(s.Placements) {
				add(s.Placements[i], fmt.Sprintf("%s grpc %d, raft %d", s.addr(h), placementPort, placementRaft))
			}
			if i < len(s.Schedulers) {
				add(s.Schedulers[i], fmt.Sprintf("%s grpc %d, etcd %d", s.addr(h), schedulerPort, schedulerEtcdPeer))
			}
		}
	} else {
		add(s.Placement, fmt.Sprintf("grpc %d", c.PlacementPort))
		add(s.Scheduler, fmt.Sprintf("grpc %d", c.SchedulerPort))
	}
	for _, a := range s.Apps() {
		s.mu.Lock()
		app := a.AppCmd
		s.mu.Unlock()
		at := ""
		if a.Host != "" {
			at = a.Addr() + " "
		}
		if app != nil {
			add(app, fmt.Sprintf("%shttp %d", at, a.AppPort))
		}
		add(a.Daprd, fmt.Sprintf("%shttp %d, grpc %d", at, a.HTTPPort, a.GRPCPort))
	}
	return rows
}

// PrintStatus writes the status table.
func (s *Stack) PrintStatus(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	where := "PORTS (127.0.0.1)"
	if s.cfg.Cluster != nil {
		where = "ADDRESS AND PORTS"
	}
	fmt.Fprintln(tw, "PROCESS\tPID\t"+where+"\tREADY")
	for _, r := range s.Status() {
		ready := "yes"
		if !r.Ready {
			ready = "NO"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", r.Process, r.PID, r.Ports, ready)
	}
	if s.RedisAddr != "" && s.Redis == nil {
		fmt.Fprintf(tw, "redis (REDIS_ADDR)\t-\t%s\t%s\n", s.RedisAddr, "yes")
	}
	tw.Flush()
}
