package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/daca-go/daca/internal/contract"
)

// What the fault suites count from outside the apps: the conversations
// stream as Redis holds it, and a session's history as the memory has it.

// ConversationEvents reads the conversations stream from Redis and counts
// its entries by CloudEvent id, for the sessions whose ids start with
// prefix + "-". Redis is tried for up to 30 s (it may be coming back).
func (s *Stack) ConversationEvents(ctx context.Context, prefix string) (map[string]int, error) {
	var (
		reply any
		err   error
	)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if reply, err = s.RedisDo("XRANGE", contract.TopicConversations, "-", "+"); err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	if err != nil {
		return nil, fmt.Errorf("reading the conversations stream: %w", err)
	}
	counts := map[string]int{}
	entries, _ := reply.([]any)
	for _, e := range entries {
		pair, _ := e.([]any)
		if len(pair) != 2 {
			continue
		}
		fields, _ := pair[1].([]any)
		for i := 0; i+1 < len(fields); i += 2 {
			if k, _ := fields[i].(string); k != "data" {
				continue
			}
			raw, _ := fields[i+1].(string)
			var ce struct {
				ID string `json:"id"`
			}
			if json.Unmarshal([]byte(raw), &ce) != nil {
				continue
			}
			var ev contract.ConversationUpdated
			if _, err := contract.DecodeCloudEvent([]byte(raw), &ev); err == nil && strings.HasPrefix(ev.SessionID, prefix+"-") {
				counts[ce.ID]++
			}
		}
	}
	return counts, nil
}

// HistoryLen is a session's history length as the memory app (its name in
// the stack) returns it, asked through that app's own sidecar; -1 when it
// does not answer.
func (s *Stack) HistoryLen(ctx context.Context, memory, session string) int {
	a := s.App(memory)
	if a == nil {
		return -1
	}
	url := a.SidecarURL() + "/v1.0/invoke/" + contract.MemoryApp + "/method/conversations/" + session
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return -1
	}
	req.Header.Set("dapr-api-token", s.APIToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var out struct {
		History []json.RawMessage `json:"history"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil {
		return -1
	}
	return len(out.History)
}

// Leaders asks each control plane host's placement server whether it leads
// the Raft group (its dapr_placement_leader_status metric) and its
// scheduler's etcd member whether it leads the etcd cluster
// (etcd_server_is_leader, on the etcd client port). It returns the hosts
// that say so, and those that did not answer.
func (s *Stack) Leaders(ctx context.Context) (placement, etcd, silent []string) {
	if s.cfg.Cluster == nil {
		return nil, nil, nil
	}
	for _, h := range s.cfg.Cluster.ControlPlane {
		p, perr := metric(ctx, fmt.Sprintf("http://%s:%d/metrics", s.addr(h), placementMetrics), "dapr_placement_leader_status")
		e, eerr := metric(ctx, fmt.Sprintf("http://%s:%d/metrics", s.addr(h), schedulerEtcdClient), "etcd_server_is_leader")
		if perr != nil || eerr != nil {
			silent = append(silent, h)
		}
		if p == "1" {
			placement = append(placement, h)
		}
		if e == "1" {
			etcd = append(etcd, h)
		}
	}
	return placement, etcd, silent
}

// metric reads one unlabelled metric's value from a Prometheus endpoint.
func metric(ctx context.Context, url, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s: no metric %s", url, name)
}
