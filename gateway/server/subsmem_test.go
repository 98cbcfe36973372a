package server

import (
	"fmt"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/daca-go/daca/graph/graphtest"
	"github.com/daca-go/daca/internal/dev/testkit"
	"github.com/daca-go/daca/internal/telemetry"
	"go.opentelemetry.io/otel"
)

// BenchmarkIdleSubscription reports the gateway's memory per open, idle
// subscription (as `make bench`'s fan-out opens them: 100 per websocket):
// goroutine stacks, live heap and heap in use, after a GC, with the tracer
// provider the gateway runs with (its spans are part of a subscription's
// setup). b.N is ignored beyond one round of subscriptions.
func BenchmarkIdleSubscription(b *testing.B) {
	const sockets, perSocket = 20, 100
	prev := otel.GetTracerProvider()
	defer otel.SetTracerProvider(prev)
	if _, err := telemetry.Setup(b.Context(), "gateway", testkit.Quiet()); err != nil { // the tracer provider as in production
		b.Fatal(err)
	}
	s, h := newServer(graphtest.New(), Config{}, 16, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var clients []*testkit.WSClient
	for i := range sockets {
		ws := testkit.DialWS(b, srv.URL+"/graphql", "graphql-transport-ws")
		ws.Send(map[string]any{"type": "connection_init", "payload": nil})
		ws.Await(5*time.Second, "connection_ack")
		for j := range perSocket {
			ws.Send(map[string]any{"id": fmt.Sprint(j), "type": "subscribe", "payload": map[string]any{
				"query": `subscription($s: ID) { conversationUpdated(sessionId: $s) { eventId } }`, "variables": map[string]string{"s": fmt.Sprintf("s-%d-%d", i, j)}}})
		}
		clients = append(clients, ws)
	}
	testkit.WaitFor(b, 30*time.Second, "every subscription open", func() error {
		if n := s.hub.Conversations.Len(); n < sockets*perSocket {
			return fmt.Errorf("%d subscriptions open; want %d", n, sockets*perSocket)
		}
		return nil
	})
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	n := float64(sockets * perSocket)
	b.ReportMetric(float64(after.StackInuse-before.StackInuse)/n, "stack-B/sub")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/sub")
	b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n, "heapinuse-B/sub")
	for _, ws := range clients {
		ws.Close()
	}
}
