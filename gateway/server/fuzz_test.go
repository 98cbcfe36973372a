package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/daca-go/daca/graph/graphtest"
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
	_, h := newServer(graphtest.New(), Config{}, 0, nil)
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
	s, h := newServer(graphtest.New(), Config{}, 0, nil)
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
		if n := s.hub.Memories.Len(); n != 0 {
			t.Fatalf("%s: %d subscribers left in the broker", name, n)
		}
	}
}

// FuzzWebsocketFrame: whatever frame a client sends (before or after
// connection_init, on either protocol), the gateway answers it as
// graphql-transport-ws says (expectFrame: the close code that fits the
// frame, or the answer it must get), and on legacy graphql-ws answers or
// closes with 1002 and a reason — never an internal error or a dropped
// connection.
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
	_, h := newServer(graphtest.New(), Config{InitTimeout: time.Second}, 0, nil)
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
		want := expectFrame(legacy, init, frame)
		// Read until the connection closes, or until quiet for a while: a
		// frame that needs no answer (a pong, a complete) leaves it open.
		rctx, rcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer rcancel()
		var got []string // types of the messages answered
		for {
			_, b, err := c.Read(rctx)
			if err == nil {
				if m, ok := parseMessage(b); ok && m.Type != "connection_ack" && m.Type != "ka" {
					got = append(got, m.Type)
				}
				continue
			}
			code := websocket.CloseStatus(err)
			if rctx.Err() != nil {
				code = 0 // still open
			}
			if legacy {
				// Legacy graphql-ws has no close codes of its own: an answer,
				// 1002 with a reason, or staying open; never a dropped link.
				if rctx.Err() == nil && code != websocket.StatusProtocolError && code != websocket.StatusNormalClosure {
					t.Fatalf("%s: %.200q ended the connection with %v (%v)", proto, frame, code, err)
				}
				return
			}
			if !slices.Contains(want.codes, int(code)) {
				t.Fatalf("%s (init %v): %.200q: close %d, answers %v; want one of close %v", proto, init, frame, code, got, want.codes)
			}
			if code == 0 && want.answer != "" && !slices.Contains(got, want.answer) {
				t.Fatalf("%s (init %v): %.200q: answers %v; want %s", proto, init, frame, got, want.answer)
			}
			return
		}
	})
}

// expectation is what a frame must get: one of the close codes (0: the
// connection stays open), and when it stays open, the answer (if any).
type expectation struct {
	codes  []int
	answer string
}

// expectFrame is the graphql-transport-ws protocol's answer to one frame
// (github.com/enisdenjo/graphql-ws, PROTOCOL.md), after connection_init
// when init: the close code it names, or the message the server answers.
func expectFrame(legacy, init bool, frame []byte) expectation {
	if legacy {
		return expectation{}
	}
	m, ok := parseMessage(frame)
	if !ok {
		return expectation{codes: []int{4400}}
	}
	switch m.Type {
	case "connection_init":
		if init {
			return expectation{codes: []int{4429}}
		}
		return expectation{codes: []int{0}, answer: "connection_ack"}
	case "subscribe":
		switch {
		case !init:
			return expectation{codes: []int{4401}}
		case m.ID == "":
			return expectation{codes: []int{4400}}
		}
		// Answered (next, error, complete), waiting for events, or a
		// payload that is not an operation (4400).
		return expectation{codes: []int{0, 4400}}
	case "complete":
		switch {
		case !init:
			return expectation{codes: []int{4401}}
		case m.ID == "":
			return expectation{codes: []int{4400}}
		}
		return expectation{codes: []int{0}}
	case "ping":
		return expectation{codes: []int{0}, answer: "pong"}
	case "pong":
		return expectation{codes: []int{0}}
	}
	return expectation{codes: []int{4400}}
}
