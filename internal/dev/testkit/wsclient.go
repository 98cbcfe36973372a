package testkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// WSClient is a GraphQL websocket client for tests. It speaks graphql-transport-ws (graphql-ws library, Apollo's
// GraphQLWsLink) or the legacy graphql-ws (subscriptions-transport-ws).
type WSClient struct {
	t     testing.TB
	conn  *websocket.Conn
	proto string
	msgs  chan map[string]any
	done  chan struct{}
	err   error
	// results of other operations read while waiting for one
	pending map[string][]map[string]any
	reader  sync.Once
	started bool
	quit    chan struct{}
	// Silent, set before the first read, makes the client never answer the
	// server's graphql-transport-ws ping (a dead peer, for tests of that).
	// Otherwise every ping is answered with a pong at once, as client
	// libraries do, whether or not the test is reading.
	Silent bool
}

func DialWS(t testing.TB, url, proto string) *WSClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, strings.Replace(url, "http", "ws", 1), &websocket.DialOptions{Subprotocols: []string{proto}})
	if err != nil {
		t.Fatalf("dial %s (%s): %v", url, proto, err)
	}
	if resp.Header.Get("Sec-Websocket-Protocol") != proto {
		t.Fatalf("server chose subprotocol %q; want %q", resp.Header.Get("Sec-Websocket-Protocol"), proto)
	}
	c := &WSClient{t: t, conn: conn, proto: proto, msgs: make(chan map[string]any, 256), done: make(chan struct{}), quit: make(chan struct{})}
	t.Cleanup(c.stop)
	return c
}

// messages starts the background reader once: until then a test may drive
// Conn by hand (a client that never reads, or reads frames raw).
func (c *WSClient) messages() chan map[string]any {
	c.reader.Do(func() { c.started = true; go c.readLoop() })
	return c.msgs
}

// Conn is the connection, for a test that reads or closes it by hand (before
// any call that reads messages).
func (c *WSClient) Conn() *websocket.Conn { return c.conn }

func (c *WSClient) readLoop() {
	defer close(c.done)
	for {
		_, b, err := c.conn.Read(context.Background())
		if err != nil {
			c.err = err
			return
		}
		var m map[string]any
		if json.Unmarshal(b, &m) == nil {
			if m["type"] == "ping" && !c.Silent && c.proto == "graphql-transport-ws" {
				_ = c.conn.Write(context.Background(), websocket.MessageText, []byte(`{"type":"pong"}`))
			}
			select {
			case c.msgs <- m:
			case <-c.quit:
				return
			}
		}
	}
}

// Send writes v as a JSON text message.
func (c *WSClient) Send(v any) {
	c.t.Helper()
	b, _ := json.Marshal(v)
	if err := c.conn.Write(c.t.Context(), websocket.MessageText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// SendRaw writes s as a text message.
func (c *WSClient) SendRaw(s string) {
	c.t.Helper()
	if err := c.conn.Write(c.t.Context(), websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// Next returns the next message of one of the types, skipping keepalives.
func (c *WSClient) Next(timeout time.Duration, types ...string) map[string]any {
	c.t.Helper()
	return c.wait(timeout, true, types)
}

// Init sends connection_init and waits for connection_ack.
func (c *WSClient) Init(payload map[string]any) {
	c.t.Helper()
	c.Send(map[string]any{"type": "connection_init", "payload": payload})
	c.Next(10*time.Second, "connection_ack")
}

// Subscribe starts an operation with the protocol's message type.
func (c *WSClient) Subscribe(id, query string, vars map[string]any) {
	typ := "subscribe"
	if c.proto == "graphql-ws" {
		typ = "start"
	}
	c.Send(map[string]any{"id": id, "type": typ, "payload": map[string]any{"query": query, "variables": vars}})
}

// Data waits for the next result of operation id; results of other
// operations that arrive meanwhile are kept for their own data call.
func (c *WSClient) Data(id string, timeout time.Duration) map[string]any {
	c.t.Helper()
	typ := "next"
	if c.proto == "graphql-ws" {
		typ = "data"
	}
	var m map[string]any
	if q := c.pending[id]; len(q) > 0 {
		m, c.pending[id] = q[0], q[1:]
	}
	for m == nil {
		got := c.Next(timeout, typ, "error", "complete")
		if got["type"] == typ && got["id"] != id {
			if c.pending == nil {
				c.pending = map[string][]map[string]any{}
			}
			oid := fmt.Sprint(got["id"])
			c.pending[oid] = append(c.pending[oid], got)
			continue
		}
		m = got
	}
	if m["type"] != typ || m["id"] != id {
		c.t.Fatalf("got %v; want %s for %s", m, typ, id)
	}
	p, _ := m["payload"].(map[string]any)
	if errs, ok := p["errors"]; ok {
		c.t.Fatalf("subscription error: %v", errs)
	}
	d, _ := p["data"].(map[string]any)
	return d
}

// Closed waits for the server to close the connection and returns the code.
func (c *WSClient) Closed(timeout time.Duration) websocket.StatusCode {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case <-c.messages():
		case <-c.done:
			var ce websocket.CloseError
			if errors.As(c.err, &ce) {
				return ce.Code
			}
			return -1
		case <-deadline:
			c.t.Fatalf("connection not closed within %s", timeout)
		}
	}
}

// Await returns the next message of one of the types, skipping any other.
func (c *WSClient) Await(timeout time.Duration, types ...string) map[string]any {
	c.t.Helper()
	return c.wait(timeout, false, types)
}

// wait returns the next message of one of the types. Keepalives are skipped
// (the reader answers pings itself); any other message fails the test when
// strict, and is skipped otherwise.
func (c *WSClient) wait(timeout time.Duration, strict bool, types []string) map[string]any {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m := <-c.messages():
			typ, _ := m["type"].(string)
			if slices.Contains(types, typ) {
				return m
			}
			if strict && typ != "ka" && typ != "ping" && typ != "pong" {
				c.t.Fatalf("unexpected message %v (want %v)", m, types)
			}
		case <-c.done:
			c.t.Fatalf("connection closed while waiting for %v: %v", types, c.err)
		case <-deadline:
			c.t.Fatalf("no %v within %s", types, timeout)
		}
	}
}

// Close closes the connection normally.
func (c *WSClient) Close() { c.conn.Close(websocket.StatusNormalClosure, "") }

// stop ends the connection and its reader (at the test's end).
func (c *WSClient) stop() {
	c.conn.CloseNow()
	close(c.quit)
	c.reader.Do(func() {}) // no reader from now on
	if c.started {
		<-c.done
	}
}

// Err is why the connection ended (a websocket.CloseError when the server
// closed it), once Closed has returned; nil before.
func (c *WSClient) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}
