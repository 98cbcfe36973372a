package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/daca-go/daca/gateway/backend/backendtest"
)

// FuzzGraphQLRequest: whatever a client sends to /graphql, the gateway
// answers with a status the GraphQL-over-HTTP spec allows and a GraphQL
// response (data and/or errors), and a body that is not JSON is never
// quoted back. (go test runs the seeds; go test -fuzz=FuzzGraphQLRequest
// ./gateway/server/ explores.)
func FuzzGraphQLRequest(f *testing.F) {
	for _, s := range []struct {
		get         bool
		contentType string
		body        string
	}{
		{false, "application/json", `{"query":"{ health { status } }"}`},
		{false, "application/json", `{"query":"query($u: ID!) { memory(userId: $u) { name } }","variables":{"u":"ana"}}`},
		{false, "application/json", `{"query":"mutation { forgetUser(userId: \"ana\") }"}`},
		{false, "application/json", `{"query":"subscription { memoryUpdated(userId: \"ana\") { userId } }"}`},
		{false, "application/json", `{"query": `},
		{false, "application/json", `[{"query":"{ health { status } }"}]`},
		{false, "application/json", `{"query":"{ a: health { status } b: health { status } }","operationName":"x"}`},
		{false, "application/json", `{"query":"` + strings.Repeat("{ health ", 50) + `"}`},
		{false, "application/json", `{"query":"{ memory(userId: 5) { name } }","variables":[1]}`},
		{false, "text/plain", `{"query":"mutation { forgetUser(userId: \"ana\") }"}`},
		{false, "application/graphql", `{ health { status } }`},
		{false, "", "\x00\xff"},
		{true, "", `{ health { status } }`},
		{true, "", `mutation { forgetUser(userId: "ana") }`},
	} {
		f.Add(s.get, s.contentType, []byte(s.body))
	}
	_, h := newServer(backendtest.New(), Config{}, 0, nil)
	f.Fuzz(func(t *testing.T, get bool, contentType string, body []byte) {
		var req *http.Request
		if get {
			req = httptest.NewRequest(http.MethodGet, "/graphql?query="+url.QueryEscape(string(body)), nil)
		} else {
			req = httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
			req.Header.Set("Content-Type", contentType)
		}
		w := httptest.NewRecorder()
		done := make(chan struct{})
		go func() { defer close(done); h.ServeHTTP(w, req) }() // a panic fails the fuzz run
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("no answer within 5s for %q %.200q", contentType, body)
		}
		switch w.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusNotAcceptable,
			http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity:
		default:
			t.Fatalf("status %d for %q %.200q: %.300s", w.Code, contentType, body, w.Body)
		}
		var resp struct {
			Data   json.RawMessage  `json:"data"`
			Errors []map[string]any `json:"errors"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || (len(resp.Data) == 0 && len(resp.Errors) == 0) {
			t.Fatalf("not a GraphQL response (status %d) for %.200q: %.300s", w.Code, body, w.Body)
		}
		for _, e := range resp.Errors {
			if m, _ := e["message"].(string); m == "" {
				t.Fatalf("an error without a message for %.200q: %.300s", body, w.Body)
			}
		}
		if !get && !json.Valid(body) && len(body) >= 16 && bytes.Contains(w.Body.Bytes(), body) {
			t.Fatalf("the body was quoted back: %.300s", w.Body)
		}
	})
}

// TestSubscriptionOverHTTPRefused: a subscription sent as a plain HTTP
// request is answered at once with an error (it used to hang until the first
// event, holding a subscriber), and holds nothing.
func TestSubscriptionOverHTTPRefused(t *testing.T) {
	s, h := newServer(backendtest.New(), Config{}, 0, nil)
	q := `subscription { memoryUpdated(userId: "ana") { userId } }`
	for name, req := range map[string]*http.Request{
		"POST": httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(`{"query":`+strconv.Quote(q)+`}`)),
		"GET":  httptest.NewRequest(http.MethodGet, "/graphql?query="+url.QueryEscape(q), nil),
	} {
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		done := make(chan struct{})
		go func() { h.ServeHTTP(w, req); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: a subscription over HTTP is still open after 5s", name)
		}
		var resp struct {
			Errors []struct {
				Message    string
				Extensions map[string]any
			}
		}
		json.Unmarshal(w.Body.Bytes(), &resp)
		if len(resp.Errors) != 1 || resp.Errors[0].Extensions["code"] != "BAD_REQUEST" || !strings.Contains(resp.Errors[0].Message, "websocket") {
			t.Fatalf("%s: %d %s", name, w.Code, w.Body)
		}
		if n := s.res.Memories.Len(); n != 0 {
			t.Fatalf("%s: %d subscribers left in the broker", name, n)
		}
	}
}

// FuzzWebsocketFrame: whatever frame a client sends (before or after
// connection_init, on either protocol), the gateway answers it or closes
// the socket with a protocol code (graphql-transport-ws: 44xx; legacy
// graphql-ws: 1002 with a reason), never with an internal error or by
// dropping the connection.
func FuzzWebsocketFrame(f *testing.F) {
	for _, s := range []struct {
		legacy, init bool
		frame        string
	}{
		{false, true, `{"id":"1","type":"subscribe","payload":{"query":"subscription { memoryUpdated(userId: \"ana\") { userId } }"}}`},
		{false, true, `{"id":"1","type":"subscribe","payload":{"query":"{ health { status } }"}}`},
		{false, false, `{"id":"1","type":"subscribe","payload":{"query":"{ health { status } }"}}`},
		{false, true, `{"type":"connection_init"}`},
		{false, true, `{"type":"ping"}`},
		{false, true, `{"id":"1","type":"complete"}`},
		{false, true, `{"id":1,"type":"subscribe","payload":"x"}`},
		{false, true, `not json`},
		{false, true, "\x00\x01"},
		{true, true, `{"id":"1","type":"start","payload":{"query":"{ health { status } }"}}`},
		{true, true, `{"id":"1","type":"stop"}`},
		{true, false, `{"type":"connection_terminate"}`},
		{true, true, `[]`},
	} {
		f.Add(s.legacy, s.init, []byte(s.frame))
	}
	_, h := newServer(backendtest.New(), Config{InitTimeout: time.Second}, 0, nil)
	srv := httptest.NewServer(h)
	f.Cleanup(srv.Close)
	f.Fuzz(func(t *testing.T, legacy, init bool, frame []byte) {
		proto := "graphql-transport-ws"
		if legacy {
			proto = "graphql-ws"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, strings.Replace(srv.URL, "http", "ws", 1)+"/graphql", &websocket.DialOptions{Subprotocols: []string{proto}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if init {
			if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"connection_init"}`)); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Write(ctx, websocket.MessageText, frame); err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer rcancel()
		for {
			_, _, err := c.Read(rctx)
			if err == nil {
				continue
			}
			if rctx.Err() != nil {
				return // still open and quiet: fine
			}
			switch code := websocket.CloseStatus(err); code {
			case websocket.StatusNormalClosure, 4400, 4401, 4403, 4408, 4409, 4429:
				return
			case websocket.StatusProtocolError: // legacy graphql-ws has no codes of its own: 1002 and a reason
				if legacy {
					return
				}
				t.Fatalf("%s: %.200q closed with 1002; graphql-transport-ws has its own codes (%v)", proto, frame, err)
			default:
				t.Fatalf("%s: %.200q ended the connection with %v (%v)", proto, frame, code, err)
			}
		}
	})
}
