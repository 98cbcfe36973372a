package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsClient speaks graphql-transport-ws (graphql-ws library, Apollo's
// GraphQLWsLink) or the legacy graphql-ws (subscriptions-transport-ws).
type wsClient struct {
	t     *testing.T
	conn  *websocket.Conn
	proto string
	msgs  chan map[string]any
	done  chan struct{}
	err   error
	// results of other operations read while waiting for one
	pending map[string][]map[string]any
}

func dial(t *testing.T, url, proto string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, strings.Replace(url, "http://", "ws://", 1), &websocket.DialOptions{Subprotocols: []string{proto}})
	if err != nil {
		t.Fatalf("dial %s (%s): %v", url, proto, err)
	}
	if resp.Header.Get("Sec-Websocket-Protocol") != proto {
		t.Fatalf("server chose subprotocol %q; want %q", resp.Header.Get("Sec-Websocket-Protocol"), proto)
	}
	c := &wsClient{t: t, conn: conn, proto: proto, msgs: make(chan map[string]any, 256), done: make(chan struct{})}
	go c.read()
	t.Cleanup(func() { conn.Close(websocket.StatusNormalClosure, "") })
	return c
}

func (c *wsClient) read() {
	defer close(c.done)
	for {
		_, b, err := c.conn.Read(context.Background())
		if err != nil {
			c.err = err
			return
		}
		var m map[string]any
		if json.Unmarshal(b, &m) == nil {
			c.msgs <- m
		}
	}
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	b, _ := json.Marshal(v)
	if err := c.conn.Write(c.t.Context(), websocket.MessageText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *wsClient) sendRaw(s string) {
	c.t.Helper()
	if err := c.conn.Write(c.t.Context(), websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next returns the next message of one of the types, skipping keepalives.
func (c *wsClient) next(timeout time.Duration, types ...string) map[string]any {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m := <-c.msgs:
			typ, _ := m["type"].(string)
			for _, want := range types {
				if typ == want {
					return m
				}
			}
			if typ == "ka" || typ == "ping" || typ == "pong" {
				if typ == "ping" {
					c.send(map[string]string{"type": "pong"})
				}
				continue
			}
			c.t.Fatalf("unexpected message %v (want %v)", m, types)
		case <-c.done:
			c.t.Fatalf("connection closed while waiting for %v: %v", types, c.err)
		case <-deadline:
			c.t.Fatalf("no %v within %s", types, timeout)
		}
	}
}

func (c *wsClient) init(payload map[string]any) {
	c.t.Helper()
	c.send(map[string]any{"type": "connection_init", "payload": payload})
	c.next(10*time.Second, "connection_ack")
}

// subscribe starts an operation with the protocol's message type.
func (c *wsClient) subscribe(id, query string, vars map[string]any) {
	typ := "subscribe"
	if c.proto == "graphql-ws" {
		typ = "start"
	}
	c.send(map[string]any{"id": id, "type": typ, "payload": map[string]any{"query": query, "variables": vars}})
}

// data waits for the next result of operation id; results of other
// operations that arrive meanwhile are kept for their own data call.
func (c *wsClient) data(id string, timeout time.Duration) map[string]any {
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
		got := c.next(timeout, typ, "error", "complete")
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

// closed waits for the server to close the connection and returns the code.
func (c *wsClient) closed(timeout time.Duration) websocket.StatusCode {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case <-c.msgs:
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

// gql posts a GraphQL request.
func gql(t *testing.T, url, query string, vars map[string]any) (map[string]any, []any, int) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data   map[string]any `json:"data"`
		Errors []any          `json:"errors"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	return out.Data, out.Errors, resp.StatusCode
}

func code(errs []any) string {
	if len(errs) == 0 {
		return ""
	}
	e, _ := errs[0].(map[string]any)
	ext, _ := e["extensions"].(map[string]any)
	return fmt.Sprint(ext["code"])
}
