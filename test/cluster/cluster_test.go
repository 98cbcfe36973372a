// Package cluster runs the system on several hosts of this machine (Linux
// network namespaces, internal/dev/netns) as make cluster does: every app on
// each of three hosts, Dapr's control plane in its highly available form
// (three placement servers in a Raft group, three schedulers with their
// embedded etcd cluster), Redis and sentry on a fourth host, mTLS between
// every sidecar with the Kubernetes manifests' access policies. Turns cross
// hosts; a process without a certificate reaches no sidecar.
package cluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/daca-go/daca/internal/dev/netns"
	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

func TestMain(m *testing.M) {
	if err := netns.Available(); err != nil {
		fmt.Fprintf(os.Stderr, "cluster: skipped: %v\n", err)
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "daca-cluster-failpoints-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	failpoints = dir
	code := stacktest.Run(m, stacktest.Options{
		Cluster: &stacktest.Cluster{Prefix: "dcl", Subnet: "10.78.1",
			Env: []string{"FAILPOINTS_DIR=" + dir, "WARMUP_TIMEOUT=" + warmupTimeout.String()}},
		AfterTests: noUnexpectedRestarts,
	})
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	// failpoints is every chat-service's FAILPOINTS_DIR.
	failpoints string
	// warmupTimeout is every chat-service's WARMUP_TIMEOUT.
	warmupTimeout = 60 * time.Second

	// expectedRestarts are the processes a test made exit on their own,
	// which the cluster then started again (Stack.Supervised).
	expectedMu       sync.Mutex
	expectedRestarts = map[string]bool{}
)

func expectRestart(names ...string) {
	expectedMu.Lock()
	defer expectedMu.Unlock()
	for _, n := range names {
		expectedRestarts[n] = true
	}
}

// noUnexpectedRestarts fails the run when the cluster restarted an app or
// a sidecar that exited on its own and no test expected it to: the
// supervisor must not hide a crash (or a race report) from the tests.
// The control plane's restarts are reported, not failed (Dapr's placement
// exits when it loses leadership).
func noUnexpectedRestarts(st *stack.Stack) error {
	expectedMu.Lock()
	defer expectedMu.Unlock()
	var bad []string
	for name, n := range st.Supervised() {
		switch {
		case strings.HasPrefix(name, "placement-") || strings.HasPrefix(name, "scheduler-"):
			fmt.Fprintf(os.Stderr, "cluster: %s exited on its own and was started again %d time(s)\n", name, n)
		case !expectedRestarts[name]:
			bad = append(bad, fmt.Sprintf("%s (%d)", name, n))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("processes exited on their own and were started again: %s (see their logs)", strings.Join(bad, ", "))
	}
	return nil
}

var hosts = []string{"h1", "h2", "h3"}

func gateway(st *stack.Stack, host string) string {
	return st.App("gateway-"+host).AppURL() + "/graphql"
}

func gql(t *testing.T, url, query string, vars map[string]any) map[string]any {
	t.Helper()
	r := stacktest.Do(t, "POST", url, map[string]any{"query": query, "variables": vars})
	if errs, _ := r.JSON["errors"].([]any); len(errs) > 0 || r.Status != 200 {
		t.Fatalf("%s: %d %s", query, r.Status, r.Body)
	}
	d, _ := r.JSON["data"].(map[string]any)
	return d
}

// TestTurnsAcrossHosts: a turn through each host's gateway completes (its
// workflow runs wherever placement puts it), and every host's gateway
// reads the conversation of all of them.
func TestTurnsAcrossHosts(t *testing.T) {
	st := stacktest.Stack(t)
	user, session := fmt.Sprintf("cl-%d", time.Now().UnixNano()), fmt.Sprintf("cl-s-%d", time.Now().UnixNano())
	for i, h := range hosts {
		d := gql(t, gateway(st, h), `mutation($in: SendMessageInput!) { sendMessage(input: $in) { reply status } }`,
			map[string]any{"in": map[string]any{"userId": user, "sessionId": session, "text": fmt.Sprintf("hello from %s", h)}})
		rep := d["sendMessage"].(map[string]any)
		if rep["status"] != "COMPLETED" || !strings.Contains(fmt.Sprint(rep["reply"]), "hello from "+h) {
			t.Fatalf("turn %d via %s: %v", i, h, rep)
		}
	}
	for _, h := range hosts {
		testkit.WaitFor(t, 30*time.Second, "the conversation on "+h, func() error {
			d := gql(t, gateway(st, h), `query($s: ID!) { conversation(sessionId: $s) { messages { content } } }`, map[string]any{"s": session})
			if n := len(d["conversation"].(map[string]any)["messages"].([]any)); n != 2*len(hosts) {
				return fmt.Errorf("%d messages", n)
			}
			return nil
		})
	}
}

// TestApprovalDecidedOnAnotherHost: a tool call started through one host's
// gateway waits for approval; another host's gateway lists it, a third's
// decision runs it, and the turn completes with its result.
func TestApprovalDecidedOnAnotherHost(t *testing.T) {
	st := stacktest.Stack(t)
	user := fmt.Sprintf("cl-approve-%d", time.Now().UnixNano())
	d := gql(t, gateway(st, "h1"), `mutation($u: ID!) { startChat(input: {userId: $u, text: "remind me to water the plants"}) { instanceId } }`, map[string]any{"u": user})
	id := d["startChat"].(map[string]any)["instanceId"].(string)
	var approval string
	testkit.WaitFor(t, 60*time.Second, "the request on h2", func() error {
		d := gql(t, gateway(st, "h2"), `query($u: ID!) { pendingApprovals(userId: $u) { id instanceId } }`, map[string]any{"u": user})
		list := d["pendingApprovals"].([]any)
		if len(list) != 1 {
			return fmt.Errorf("pending %v", list)
		}
		approval = list[0].(map[string]any)["id"].(string)
		return nil
	})
	gql(t, gateway(st, "h3"), `mutation($a: ID!) { decideToolCall(approvalId: $a, approve: true) { status } }`, map[string]any{"a": approval})
	testkit.WaitFor(t, 60*time.Second, "the turn's end on h1", func() error {
		d := gql(t, gateway(st, "h1"), `query($i: ID!) { chatRun(instanceId: $i) { status reply } }`, map[string]any{"i": id})
		run := d["chatRun"].(map[string]any)
		if run["status"] != "COMPLETED" || !strings.Contains(fmt.Sprint(run["reply"]), "tools_create_note answered: noted") {
			return fmt.Errorf("%v", run)
		}
		return nil
	})
}

// TestNoCertificateNoEntry: every sidecar's internal gRPC port (the one
// sidecars call each other on) speaks only mTLS: a client without a
// certificate from sentry gets nothing from any of them.
func TestNoCertificateNoEntry(t *testing.T) {
	st := stacktest.Stack(t)
	for _, a := range st.Apps() {
		conn, err := grpc.NewClient(fmt.Sprintf("%s:%d", a.Addr(), a.InternalGRPCPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err = grpc_health_v1.NewHealthClient(conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{})
		cancel()
		conn.Close()
		if status.Code(err) != codes.Unavailable { // no connection at all: not even an "unimplemented"
			t.Fatalf("%s: a plain-text client on the internal port %d got %v; want no connection", a.Name, a.InternalGRPCPort, err)
		}
	}
}

// TestNoTokenNoIdentity (row 6, sentry): sentry issues an identity only
// to a process with a token for it, signed by the cluster's key (its JWKS
// validator; the insecure one is off). A sidecar on the fifth host asking
// for chat-service's identity with the intruder's token, or with none, is
// refused and never starts.
func TestNoTokenNoIdentity(t *testing.T) {
	st := stacktest.Stack(t)
	for i, tc := range []struct {
		name, token, want string
	}{
		{"with another app's token", "intruder", "token validation failed"},
		{"without a token", stack.NoToken, "a validator name must be specified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ra, err := st.StartApp(t.Context(), stack.App{ID: "chat-service", Name: fmt.Sprintf("impostor-%d", i), Host: "h4", Token: tc.token})
			if err == nil {
				t.Fatal("a sidecar with chat-service's id and no token for it started")
			}
			var tail []string
			if ra != nil && ra.Daprd != nil {
				tail = ra.Daprd.Tail()
			}
			if !slices.ContainsFunc(tail, func(l string) bool { return strings.Contains(l, tc.want) }) {
				t.Fatalf("it did not start (%v), but its log does not say sentry refused it (%q):\n%s", err, tc.want, strings.Join(tail, "\n"))
			}
		})
	}
}

// TestAnotherAppIsRefused: a sidecar with a valid identity from sentry but
// an app id no policy names (on the infra host) is refused by every app it
// invokes — as the Kubernetes manifests' policies say — while the gateway's
// sidecar, making the same calls, is answered.
func TestAnotherAppIsRefused(t *testing.T) {
	st := stacktest.Stack(t)
	intruder, err := st.StartApp(t.Context(), stack.App{ID: "intruder", Host: "h4"})
	if err != nil {
		t.Fatal(err)
	}
	gw := st.App("gateway-h1")
	for _, call := range []string{
		"agent-memory-service/method/memories/cl-acl",
		"chat-service/method/health",
		"tool-server/method/health",
	} {
		for _, from := range []struct {
			sidecar *stack.RunningApp
			want    int
		}{{intruder, http.StatusForbidden}, {gw, http.StatusOK}} {
			if from.sidecar == gw && strings.HasPrefix(call, "tool-server") {
				continue // the gateway may not call the tool server either
			}
			testkit.WaitFor(t, 30*time.Second, fmt.Sprintf("%s → %s", from.sidecar.ID, call), func() error {
				r := stacktest.Do(t, http.MethodGet, from.sidecar.SidecarURL()+"/v1.0/invoke/"+call, nil, "dapr-api-token", st.APIToken)
				if r.Status != from.want {
					return fmt.Errorf("status %d (%s); want %d", r.Status, r.Body, from.want)
				}
				return nil
			})
		}
	}
}
