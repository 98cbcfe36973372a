package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// The cluster's fault rows (issue 26), each under a steady load of chat
// turns through the gateways of h1 and h2, counted from outside the apps:
// the answers the clients got, the histories, and the conversations stream
// read from Redis itself.

const (
	faultClients = 3
	faultTurns   = 4 // per client
)

// result is what one row counted.
type result struct {
	completed, stuck int
	sessionsOK       int
	eventsMin, stray int
	slowest          time.Duration // the longest turn that started after the fault
	untilAllRunAgain time.Duration // from the fault to the last completion of a turn in flight at the fault
	problems         []string
}

// load runs faultClients clients, each sending faultTurns turns on its own
// session one after the other through the h1 and h2 gateways in turn,
// retrying each with its idempotency key until it completes; fault runs
// once every client has completed one turn. It returns what it counted.
func load(t *testing.T, st *stack.Stack, prefix string, fault func() time.Time) result {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	type turn struct {
		session, instance string
		start, end        time.Time
	}
	var (
		mu    sync.Mutex
		turns []turn
		wg    sync.WaitGroup
	)
	first := make(chan struct{}, faultClients)
	for c := range faultClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			session := fmt.Sprintf("%s-s%d", prefix, c)
			for i := range faultTurns {
				key := fmt.Sprintf("%s-c%d-t%d", prefix, c, i)
				tr := turn{session: session, start: time.Now()}
				for try := 0; ctx.Err() == nil; try++ {
					url := gateway(st, hosts[(c+try)%2]) // h1, h2
					r, err := stacktest.Call(ctx, http.MethodPost, url, map[string]any{
						"query":     `mutation($in: SendMessageInput!) { sendMessage(input: $in) { instanceId status } }`,
						"variables": map[string]any{"in": map[string]any{"userId": "cl-fault", "sessionId": session, "text": "hello " + key, "idempotencyKey": key}},
					})
					if err == nil {
						var out struct {
							Data struct {
								SendMessage *struct{ InstanceID, Status string }
							}
						}
						if json.Unmarshal(r.Body, &out) == nil && out.Data.SendMessage != nil && out.Data.SendMessage.Status == "COMPLETED" {
							tr.instance, tr.end = out.Data.SendMessage.InstanceID, time.Now()
							break
						}
					}
					select {
					case <-ctx.Done():
					case <-time.After(250 * time.Millisecond):
					}
				}
				mu.Lock()
				turns = append(turns, tr)
				mu.Unlock()
				if i == 0 {
					first <- struct{}{}
				}
			}
		}()
	}
	for range faultClients {
		select {
		case <-first:
		case <-ctx.Done():
		}
	}
	at := fault()
	wg.Wait()

	var r result
	perSession := map[string]int{}
	done := map[string]bool{}
	for _, tr := range turns {
		if tr.end.IsZero() {
			r.stuck++
			continue
		}
		r.completed++
		perSession[tr.session]++
		done[tr.instance] = true
		if tr.start.After(at) {
			r.slowest = max(r.slowest, tr.end.Sub(tr.start))
		} else if tr.end.After(at) {
			r.untilAllRunAgain = max(r.untilAllRunAgain, tr.end.Sub(at))
		}
	}
	for s, n := range perSession {
		var got int
		ok := testkit.Eventually(100*time.Second, func() bool { got = historyLen(t, st, s); return got >= 2*n })
		if ok && got == 2*n {
			r.sessionsOK++
		} else {
			r.problems = append(r.problems, fmt.Sprintf("session %s: %d history entries for %d completed turns", s, got, n))
		}
	}
	counts := streamCounts(t, st, prefix)
	r.eventsMin = -1
	for id := range done {
		if n := counts[id]; r.eventsMin < 0 || n < r.eventsMin {
			r.eventsMin = n
		}
	}
	for id, n := range counts {
		if !done[id] {
			r.stray += n
		}
	}
	return r
}

func (r result) check(t *testing.T) {
	t.Helper()
	if r.completed != faultClients*faultTurns || r.stuck != 0 || r.sessionsOK != faultClients || r.eventsMin < 1 || r.stray != 0 || len(r.problems) != 0 {
		t.Fatalf("%+v", r)
	}
}

// historyLen is a session's history as the memory on h1 has it.
func historyLen(t *testing.T, st *stack.Stack, session string) int {
	url := st.App(contract.MemoryApp+"-h1").SidecarURL() + "/v1.0/invoke/" + contract.MemoryApp + "/method/conversations/" + session
	r, err := stacktest.Call(t.Context(), http.MethodGet, url, nil, "dapr-api-token", st.APIToken)
	if err != nil {
		return -1
	}
	h, _ := r.JSON["history"].([]any)
	return len(h)
}

// streamCounts counts the conversations stream's entries (read from Redis)
// by CloudEvent id, for the sessions of one row (prefix).
func streamCounts(t *testing.T, st *stack.Stack, prefix string) map[string]int {
	counts := map[string]int{}
	reply, err := st.RedisDo("XRANGE", contract.TopicConversations, "-", "+")
	if err != nil {
		t.Fatalf("reading the conversations stream: %v", err)
	}
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
			var ev contract.ConversationUpdated
			if json.Unmarshal([]byte(raw), &ce) == nil {
				if _, err := contract.DecodeCloudEvent([]byte(raw), &ev); err == nil && strings.HasPrefix(ev.SessionID, prefix+"-") {
					counts[ce.ID]++
				}
			}
		}
	}
	return counts
}

// TestHostLost (row 1): every process on h3 — its apps and sidecars, its
// placement server and scheduler — is killed at once mid-load. The turns
// it was running finish on h1 and h2 (Dapr moves their workflow actors),
// nothing is lost, stuck or doubled. Then h3 comes back and serves again.
func TestHostLost(t *testing.T) {
	st := stacktest.Stack(t)
	prefix := fmt.Sprintf("lost-%d", time.Now().UnixNano()%1e6)
	r := load(t, st, prefix, func() time.Time {
		names, err := st.KillHost("h3")
		if err != nil {
			t.Errorf("killing h3: %v", err)
		}
		t.Logf("h3 lost: %d processes killed", len(names))
		return time.Now()
	})
	t.Logf("host lost: %d turns completed; in flight at the loss all done %s after it; slowest turn started after it %s", r.completed, r.untilAllRunAgain.Round(time.Millisecond), r.slowest.Round(time.Millisecond))
	r.check(t)
	if err := st.RestartHost(t.Context(), "h3"); err != nil {
		t.Fatalf("h3 back: %v", err)
	}
	gql(t, gateway(st, "h3"), `mutation { sendMessage(input: {userId: "cl-fault", text: "h3 is back"}) { status } }`, nil)
}

// TestControlPlaneMemberLost (row 4): one placement server and one
// scheduler (h1's) killed mid-load: the others go on and every turn
// completes. Not without waiting: the turns in flight take about 20 s more
// (Dapr 1.18.2's sidecars move to the other schedulers; README, Known
// issues), which this row reports.
func TestControlPlaneMemberLost(t *testing.T) {
	if os.Getenv("DACA_CLUSTER_FAULTS") == "" {
		t.Skip("make cluster-faults runs this row (make test runs the host row)")
	}
	st := stacktest.Stack(t)
	prefix := fmt.Sprintf("cp-%d", time.Now().UnixNano()%1e6)
	r := load(t, st, prefix, func() time.Time {
		for _, n := range []string{"placement-h1", "scheduler-h1"} {
			if err := st.Kill(n); err != nil {
				t.Errorf("killing %s: %v", n, err)
			}
		}
		return time.Now()
	})
	t.Logf("placement and scheduler of h1 lost: %d turns completed; in flight at the loss all done %s after it; slowest turn started after it %s", r.completed, r.untilAllRunAgain.Round(time.Millisecond), r.slowest.Round(time.Millisecond))
	r.check(t)
	for _, n := range []string{"placement-h1", "scheduler-h1"} {
		if err := st.Restart(t.Context(), n); err != nil {
			t.Fatalf("%s back: %v", n, err)
		}
	}
}

// TestApprovalOutlivesItsHost (row 5): turns whose tool calls wait for
// approval, started through h1's gateway, while h3 — one of the hosts
// running their workflows — is lost; the decisions, sent to h2's gateway,
// complete every one of them with the tool's result.
func TestApprovalOutlivesItsHost(t *testing.T) {
	if os.Getenv("DACA_CLUSTER_FAULTS") == "" {
		t.Skip("make cluster-faults runs this row")
	}
	st := stacktest.Stack(t)
	user := fmt.Sprintf("cl-wait-%d", time.Now().UnixNano())
	const n = 6 // spread over the three chat-services
	var ids []string
	for i := range n {
		d := gql(t, gateway(st, "h1"), `mutation($u: ID!, $t: String!) { startChat(input: {userId: $u, text: $t}) { instanceId } }`,
			map[string]any{"u": user, "t": fmt.Sprintf("remind me to water the plants %d", i)})
		ids = append(ids, d["startChat"].(map[string]any)["instanceId"].(string))
	}
	var pending []string
	testkit.WaitFor(t, 60*time.Second, "every turn waiting for approval", func() error {
		d := gql(t, gateway(st, "h2"), `query($u: ID!) { pendingApprovals(userId: $u) { id } }`, map[string]any{"u": user})
		list := d["pendingApprovals"].([]any)
		if len(list) != n {
			return fmt.Errorf("%d pending", len(list))
		}
		pending = pending[:0]
		for _, a := range list {
			pending = append(pending, a.(map[string]any)["id"].(string))
		}
		return nil
	})
	if _, err := st.KillHost("h3"); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	t.Cleanup(func() {
		if err := st.RestartHost(context.Background(), "h3"); err != nil {
			t.Errorf("h3 back: %v", err)
		}
	})
	for _, a := range pending {
		testkit.WaitFor(t, 60*time.Second, "the decision on h2", func() error {
			r := stacktest.Do(t, http.MethodPost, gateway(st, "h2"), map[string]any{
				"query": `mutation($a: ID!) { decideToolCall(approvalId: $a, approve: true) { status } }`, "variables": map[string]any{"a": a}})
			if errs, _ := r.JSON["errors"].([]any); len(errs) > 0 || r.Status != 200 {
				return fmt.Errorf("%d %s", r.Status, r.Body)
			}
			return nil
		})
	}
	for _, id := range ids {
		testkit.WaitFor(t, 2*time.Minute, "turn "+id+" completed", func() error {
			d := gql(t, gateway(st, "h2"), `query($i: ID!) { chatRun(instanceId: $i) { status reply } }`, map[string]any{"i": id})
			run := d["chatRun"].(map[string]any)
			if run["status"] != "COMPLETED" || !strings.Contains(fmt.Sprint(run["reply"]), "tools_create_note answered: noted") {
				return fmt.Errorf("%v", run)
			}
			return nil
		})
	}
	t.Logf("approvals outlive their host: %d turns decided on h2 after h3 was lost, all completed %s after the loss", n, time.Since(lost).Round(time.Millisecond))
}

// TestHostCutOff (row 2): h3's link goes down for 30 s mid-load — a
// partition, not a crash: its processes keep running, cut off — then comes
// back. The turns through h1 and h2 (the majority: two placement servers,
// two of three etcd members) all complete, nothing is lost or doubled; once
// the link is back h3 serves turns again.
func TestHostCutOff(t *testing.T) {
	if os.Getenv("DACA_CLUSTER_FAULTS") == "" {
		t.Skip("make cluster-faults runs this row")
	}
	st := stacktest.Stack(t)
	h3 := st.Host("h3")
	prefix := fmt.Sprintf("cut-%d", time.Now().UnixNano()%1e6)
	restored := make(chan struct{})
	r := load(t, st, prefix, func() time.Time {
		if err := h3.Cut(); err != nil {
			t.Fatalf("cutting h3 off: %v", err)
		}
		go func() {
			defer close(restored)
			time.Sleep(30 * time.Second) // the partition's length, not a wait for something
			if err := h3.Restore(); err != nil {
				t.Errorf("h3's link back: %v", err)
			}
		}()
		return time.Now()
	})
	<-restored
	t.Logf("h3 cut off for 30 s: %d turns completed; in flight at the cut all done %s after it; slowest turn started after it %s", r.completed, r.untilAllRunAgain.Round(time.Millisecond), r.slowest.Round(time.Millisecond))
	r.check(t)
	testkit.WaitFor(t, 2*time.Minute, "a turn through h3 after the partition", func() error {
		r := stacktest.Do(t, http.MethodPost, gateway(st, "h3"), map[string]any{
			"query": `mutation { sendMessage(input: {userId: "cl-fault", text: "h3 is back", idempotencyKey: "` + prefix + `-back"}) { status } }`})
		if !strings.Contains(string(r.Body), `"COMPLETED"`) {
			return fmt.Errorf("%d %s", r.Status, r.Body)
		}
		return nil
	})
}
