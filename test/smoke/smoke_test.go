// Package smoke checks the foundation end to end: a tiny app inside this test
// binary, with a real daprd sidecar on a real stack (Redis, placement,
// scheduler), uses every building block the product needs: state with ETags,
// pub/sub, scoped secrets, service invocation and workflows.
package smoke

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dapr/durabletask-go/workflow"
	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

const appID = "smoke-app"

// The test app: receives pub/sub events and answers service invocation.
var events = make(chan map[string]any, 16)

func TestMain(m *testing.M) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /dapr/subscribe", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `[{"pubsubname":"pubsub","topic":"smoke","routes":{"default":"/smoke"}}]`)
	})
	mux.HandleFunc("POST /smoke", func(w http.ResponseWriter, r *http.Request) {
		var ev map[string]any
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		select {
		case events <- ev:
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"SUCCESS"}`)
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"echo":%q}`, string(b))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)

	code := stacktest.Run(m, stacktest.Options{
		Apps: []stack.App{{
			ID:      appID,
			AppPort: ln.Addr().(*net.TCPAddr).Port,
			Secrets: []string{"smoke-allowed"},
		}},
		Secrets: map[string]string{
			"gemini-api-key": "",
			"smoke-allowed":  "allowed-value",
			"smoke-denied":   "denied-value",
		},
	})
	srv.Close()
	os.Exit(code)
}

var (
	clientOnce sync.Once
	client     dapr.Client
	clientErr  error
)

func daprClient(t *testing.T) dapr.Client {
	t.Helper()
	st := stacktest.Stack(t)
	clientOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		client, clientErr = dapr.NewClientWithAddressContext(ctx, st.App(appID).SidecarGRPC())
		if clientErr == nil {
			client.WithAuthToken(st.APIToken)
		}
	})
	if clientErr != nil {
		t.Fatalf("dapr client: %v", clientErr)
	}
	return client
}

func TestStateETagConflict(t *testing.T) {
	c := daprClient(t)
	ctx := t.Context()
	key := fmt.Sprintf("smoke-%d", time.Now().UnixNano())
	if err := c.SaveState(ctx, "statestore", key, []byte(`{"v":1}`), nil); err != nil {
		t.Fatalf("save: %v", err)
	}
	item, err := c.GetState(ctx, "statestore", key, nil)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if string(item.Value) != `{"v":1}` || item.Etag == "" {
		t.Fatalf("get = %q etag %q; want the saved value and an etag", item.Value, item.Etag)
	}
	// A write with the current ETag wins; a second write with the same (now
	// stale) ETag is refused.
	if err := c.SaveStateWithETag(ctx, "statestore", key, []byte(`{"v":2}`), item.Etag, nil,
		dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite)); err != nil {
		t.Fatalf("save with current etag: %v", err)
	}
	err = c.SaveStateWithETag(ctx, "statestore", key, []byte(`{"v":3}`), item.Etag, nil,
		dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite))
	if err == nil {
		t.Fatal("save with a stale etag succeeded; want an etag mismatch")
	}
	if !strings.Contains(strings.ToLower(err.Error()), "etag") {
		t.Fatalf("stale etag error = %v; want an etag mismatch", err)
	}
	item, err = c.GetState(ctx, "statestore", key, nil)
	if err != nil || string(item.Value) != `{"v":2}` {
		t.Fatalf("after conflict: %q, %v; want {\"v\":2}", item.Value, err)
	}
}

func TestPubSubDelivers(t *testing.T) {
	c := daprClient(t)
	want := fmt.Sprintf("hello-%d", time.Now().UnixNano())
	// The subscription is registered when the sidecar starts; a publish
	// before the consumer group exists is not lost (Redis streams).
	if err := c.PublishEvent(t.Context(), "pubsub", "smoke", map[string]string{"msg": want}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev := <-events:
			data, _ := ev["data"].(map[string]any)
			if data["msg"] == want {
				if ev["topic"] != "smoke" || ev["pubsubname"] != "pubsub" {
					t.Fatalf("event envelope = %v", ev)
				}
				return
			}
		case <-deadline:
			t.Fatal("published event not delivered within 30s")
		}
	}
}

func TestSecretsScoped(t *testing.T) {
	c := daprClient(t)
	got, err := c.GetSecret(t.Context(), "secretstore", "smoke-allowed", nil)
	if err != nil {
		t.Fatalf("allowed secret: %v", err)
	}
	if got["smoke-allowed"] != "allowed-value" {
		t.Fatalf("allowed secret = %v", got)
	}
	for _, key := range []string{"smoke-denied", "gemini-api-key"} {
		_, err := c.GetSecret(t.Context(), "secretstore", key, nil)
		if err == nil {
			t.Fatalf("secret %q read although the app is not scoped to it", key)
		}
		if !strings.Contains(err.Error(), "denied") && !strings.Contains(err.Error(), "PermissionDenied") {
			t.Fatalf("secret %q: error %v; want permission denied", key, err)
		}
	}
}

func TestSidecarAPIToken(t *testing.T) {
	st := stacktest.Stack(t)
	url := st.App(appID).SidecarURL() + "/v1.0/invoke/" + appID + "/method/echo"
	do := func(token string) (*http.Response, string) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader("ping"))
		if token != "" {
			req.Header.Set("dapr-api-token", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("invoke: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, _ := do(""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("invoke without the API token: %s; want 401", resp.Status)
	}
	resp, body := do(st.APIToken)
	if resp.StatusCode != http.StatusOK || body != `{"echo":"ping"}` {
		t.Fatalf("invoke through the sidecar: %s %s", resp.Status, body)
	}
}

func TestWorkflowRuns(t *testing.T) {
	c := daprClient(t)
	wf := workflow.NewClient(c.GrpcClientConn())
	reg := workflow.NewRegistry()
	greet := func(ctx workflow.ActivityContext) (any, error) {
		var name string
		if err := ctx.GetInput(&name); err != nil {
			return nil, err
		}
		return "hello " + name, nil
	}
	if err := reg.AddActivityN("greet", greet); err != nil {
		t.Fatal(err)
	}
	if err := reg.AddWorkflowN("smoke_workflow", func(ctx *workflow.WorkflowContext) (any, error) {
		var name string
		if err := ctx.GetInput(&name); err != nil {
			return nil, err
		}
		var out string
		err := ctx.CallActivity("greet", workflow.WithActivityInput(name),
			workflow.WithActivityRetryPolicy(&workflow.RetryPolicy{MaxAttempts: 3, InitialRetryInterval: 100 * time.Millisecond})).Await(&out)
		return out, err
	}); err != nil {
		t.Fatal(err)
	}
	workerCtx, stopWorker := context.WithCancel(context.Background())
	defer stopWorker()
	if err := wf.StartWorker(workerCtx, reg); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var id string
	// The workflow engine is ready once the sidecar has its actor placement;
	// scheduling can fail briefly before that.
	testkit.WaitFor(t, 30*time.Second, "workflow scheduled", func() error {
		var err error
		id, err = wf.ScheduleWorkflow(ctx, "smoke_workflow", workflow.WithInput("dapr"))
		return err
	})
	meta, err := wf.WaitForWorkflowCompletion(ctx, id)
	if err != nil {
		t.Fatalf("wait for workflow %s: %v", id, err)
	}
	if meta.RuntimeStatus != workflow.StatusCompleted {
		t.Fatalf("workflow %s ended %s: %v", id, meta.String(), meta.FailureDetails)
	}
	if got := meta.Output.GetValue(); got != `"hello dapr"` {
		t.Fatalf("workflow output = %s; want \"hello dapr\"", got)
	}
}
