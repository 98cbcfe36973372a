package wstransport

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"go.uber.org/goleak"

	"github.com/daca-go/daca/internal/dev/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// source is a subscription's source as the gateway's broker is one: a
// buffered channel, woken once per value and once when it closes (when the
// subscription's context ends).
type source struct {
	mu     sync.Mutex
	ch     chan string
	wake   func()
	closed bool
}

func (s *source) send(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.ch <- v
	if s.wake != nil {
		s.wake()
	}
}

func (s *source) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.ch)
		if s.wake != nil {
			s.wake()
		}
	}
}

// executor stands in for gqlgen's: an operation whose query starts with
// "subscription" is a stream from a new source (handed to the test on
// sources), anything else answers once. A query containing "nowake" does
// not take the waker; "early" sends a value before the dispatch returns.
type executor struct{ sources chan *source }

func (e executor) CreateOperationContext(ctx context.Context, p *graphql.RawParams) (*graphql.OperationContext, gqlerror.List) {
	op := ast.Query
	if strings.HasPrefix(p.Query, "subscription") {
		op = ast.Subscription
	}
	return &graphql.OperationContext{
		RawQuery:    p.Query,
		Operation:   &ast.OperationDefinition{Operation: op},
		RecoverFunc: func(_ context.Context, err any) error { return fmt.Errorf("internal system error: %v", err) },
	}, nil
}

func (e executor) DispatchOperation(ctx context.Context, rc *graphql.OperationContext) (graphql.ResponseHandler, context.Context) {
	if rc.Operation.Operation != ast.Subscription {
		return graphql.OneShot(&graphql.Response{Data: json.RawMessage(`{"answer":42}`)}), ctx
	}
	src := &source{ch: make(chan string, 64)}
	if !strings.Contains(rc.RawQuery, "nowake") {
		src.wake = Waker(ctx)
		if Waker(ctx) != nil {
			panic("a second caller got the waker")
		}
	}
	context.AfterFunc(ctx, src.close)
	if strings.Contains(rc.RawQuery, "early") {
		src.send("early")
	}
	e.sources <- src
	return func(ctx context.Context) *graphql.Response {
		select {
		case v, ok := <-src.ch:
			if !ok {
				return nil
			}
			if v == "panic" {
				panic("boom")
			}
			if v == "badjson" { // the transport's json.Marshal of the response panics
				return &graphql.Response{Data: json.RawMessage(`{"v":`)}
			}
			return &graphql.Response{Data: json.RawMessage(`{"v":"` + v + `"}`)}
		case <-ctx.Done():
			return nil
		}
	}, ctx
}

func (e executor) DispatchError(_ context.Context, list gqlerror.List) *graphql.Response {
	return &graphql.Response{Errors: list}
}

// serve starts the transport over e and returns a connected, acknowledged client.
func serve(t *testing.T, e executor) *testkit.WSClient {
	t.Helper()
	srv := httptest.NewServer(httpHandler{Websocket{PingPongInterval: time.Minute}, e})
	t.Cleanup(srv.Close)
	ws := testkit.DialWS(t, srv.URL, "graphql-transport-ws")
	t.Cleanup(ws.Close)
	ws.Init(nil)
	return ws
}

type httpHandler struct {
	t Websocket
	e executor
}

func (h httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.t.Do(w, r, h.e) }

func value(t *testing.T, ws *testkit.WSClient, id string) string {
	t.Helper()
	m := ws.Data(id, 5*time.Second)
	return fmt.Sprint(m["v"])
}

// TestIdleSubscriptionsHoldNoGoroutine: 200 subscriptions on one socket add
// no goroutine each; every value reaches its subscription, in order, also
// one sent before the dispatch returned; a client's complete ends the
// source, and its goroutines are gone.
func TestIdleSubscriptionsHoldNoGoroutine(t *testing.T) {
	const n = 200
	e := executor{sources: make(chan *source, n)}
	ws := serve(t, e)
	before := runtime.NumGoroutine()
	srcs := make([]*source, n)
	for i := range n {
		q := "subscription { s }"
		if i == 0 {
			q = "subscription { early }"
		}
		ws.Subscribe(fmt.Sprint(i), q, nil)
		srcs[i] = <-e.sources
	}
	if value(t, ws, "0") != "early" {
		t.Fatal("the value sent during the dispatch was lost")
	}
	if d := runtime.NumGoroutine() - before; d > 10 {
		t.Fatalf("%d idle subscriptions added %d goroutines", n, d)
	}
	for round := range 3 {
		for _, s := range srcs {
			s.send(fmt.Sprint(round))
		}
	}
	for i := range n {
		for round := range 3 {
			if got := value(t, ws, fmt.Sprint(i)); got != fmt.Sprint(round) {
				t.Fatalf("subscription %d: value %q, want %d", i, got, round)
			}
		}
	}
	ws.Send(map[string]any{"id": "7", "type": "complete"})
	if m := ws.Await(5*time.Second, "complete"); m["id"] != "7" {
		t.Fatalf("complete for %v", m["id"])
	}
	srcs[7].mu.Lock()
	closed := srcs[7].closed
	srcs[7].mu.Unlock()
	if !closed {
		t.Fatal("the source of a completed subscription is still open")
	}
}

// TestOperationEnds: a source that closes completes its subscription; a
// panic while delivering (in the response handler, or sending what it
// answered) is an error, then complete; a source that does not
// wake, and a query, are answered on a goroutine of their own as in gqlgen.
func TestOperationEnds(t *testing.T) {
	e := executor{sources: make(chan *source, 8)}
	ws := serve(t, e)

	ws.Subscribe("closes", "subscription { s }", nil)
	src := <-e.sources
	src.send("last")
	src.close()
	if value(t, ws, "closes") != "last" {
		t.Fatal("the value before the close was lost")
	}
	if m := ws.Await(5*time.Second, "complete"); m["id"] != "closes" {
		t.Fatalf("complete for %v", m["id"])
	}

	ws.Subscribe("panics", "subscription { s }", nil)
	(<-e.sources).send("panic")
	m := ws.Await(5*time.Second, "error")
	if m["id"] != "panics" || !strings.Contains(fmt.Sprint(m["payload"]), "boom") {
		t.Fatalf("after a panic: %v", m)
	}
	if m := ws.Await(5*time.Second, "complete"); m["id"] != "panics" {
		t.Fatalf("complete for %v", m["id"])
	}

	ws.Subscribe("badjson", "subscription { s }", nil)
	(<-e.sources).send("badjson")
	if m := ws.Await(5*time.Second, "error"); m["id"] != "badjson" || !strings.Contains(fmt.Sprint(m["payload"]), "internal system error") {
		t.Fatalf("after a response that cannot be sent: %v", m)
	}
	if m := ws.Await(5*time.Second, "complete"); m["id"] != "badjson" {
		t.Fatalf("complete for %v", m["id"])
	}

	ws.Subscribe("blocking", "subscription { nowake }", nil)
	src = <-e.sources
	src.send("a")
	if value(t, ws, "blocking") != "a" {
		t.Fatal("a source that does not wake delivered nothing")
	}
	src.close()
	if m := ws.Await(5*time.Second, "complete"); m["id"] != "blocking" {
		t.Fatalf("complete for %v", m["id"])
	}

	ws.Subscribe("q", "{ answer }", nil)
	if m := ws.Data("q", 5*time.Second); fmt.Sprint(m["answer"]) != "42" {
		t.Fatalf("query answer %v", m)
	}
	if m := ws.Await(5*time.Second, "complete"); m["id"] != "q" {
		t.Fatalf("complete for %v", m["id"])
	}
}

// TestWakerOutsideASubscription: nil for a context of no websocket
// operation.
func TestWakerOutsideASubscription(t *testing.T) {
	if Waker(context.Background()) != nil {
		t.Fatal("a waker outside any operation")
	}
}
