// Package tracing checks that one sendMessage produces one trace that spans
// gateway → chat-service (through the workflow's activities) →
// agent-memory-service (through pub/sub), with spans exported over OTLP/HTTP
// to a receiver inside this test binary.
package tracing

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// receiver collects spans: trace id → service name → span names.
type receiver struct {
	mu    sync.Mutex
	spans map[string]map[string][]string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	b, _ := io.ReadAll(r.Body)
	var req coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				tid := hex.EncodeToString(sp.TraceId)
				if rc.spans[tid] == nil {
					rc.spans[tid] = map[string][]string{}
				}
				rc.spans[tid][service] = append(rc.spans[tid][service], sp.Name)
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Write(out)
}

func (rc *receiver) trace(id string) map[string][]string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := map[string][]string{}
	for k, v := range rc.spans[id] {
		out[k] = append([]string(nil), v...)
	}
	return out
}

var rcv = &receiver{spans: map[string]map[string][]string{}}

func TestMain(m *testing.M) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: rcv, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	otel := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + ln.Addr().String(), "OTEL_BSP_SCHEDULE_DELAY=100"}
	code := stacktest.Run(m, stacktest.Options{Apps: stack.Apps(otel...)})
	srv.Close()
	os.Exit(code)
}

func TestOneTraceAcrossTheSystem(t *testing.T) {
	st := stacktest.Stack(t)
	tid := make([]byte, 16)
	sid := make([]byte, 8)
	rand.Read(tid)
	rand.Read(sid)
	traceID := hex.EncodeToString(tid)
	body := `{"query":"mutation { sendMessage(input: {userId: \"tracer\", text: \"What time is it?\"}) { reply } }"}`
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, st.App("gateway").AppURL()+"/graphql", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", fmt.Sprintf("00-%s-%s-01", traceID, hex.EncodeToString(sid)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "UTC") {
		t.Fatalf("sendMessage: %d %s", resp.StatusCode, b)
	}
	// A turn's rounds: the first fetches the context, the last saves the turn.
	want := map[string][]string{
		"gateway":              {"POST /graphql", "graphql mutation sendMessage"},
		"chat-service":         {"POST /chat", "activity generate_response", "activity run_tool"},
		"agent-memory-service": {"GET /context/tracer", "POST /conversations"},
	}
	testkit.WaitFor(t, 30*time.Second, "one trace across gateway, chat-service and agent-memory-service", func() error {
		got := rcv.trace(traceID)
		for service, names := range want {
			for _, n := range names {
				found := false
				for _, g := range got[service] {
					if g == n {
						found = true
					}
				}
				if !found {
					keys := make([]string, 0, len(got))
					for k := range got {
						keys = append(keys, k)
					}
					sort.Strings(keys)
					return fmt.Errorf("no span %q of %s in trace %s (services so far: %v, spans: %v)", n, service, traceID, keys, got)
				}
			}
		}
		return nil
	})
	// Log lines carry the trace id too.
	for _, app := range []string{"gateway", "chat-service", "agent-memory-service"} {
		b, _ := os.ReadFile(st.App(app).AppCmd.Spec.LogFile)
		if !strings.Contains(string(b), traceID) {
			t.Errorf("no log line of %s carries trace id %s", app, traceID)
		}
	}
}
