package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
)

// Close codes of the graphql-transport-ws protocol
// (github.com/enisdenjo/graphql-ws, PROTOCOL.md).
const (
	closeBadMessage      = 4400
	closeUnauthorized    = 4401
	closeForbidden       = 4403
	closeInitTimeout     = 4408
	closeDuplicateID     = 4409
	closeTooManyInitReqs = 4429
	// closeTryAgainLater (RFC 6455 1013) closes the socket of a subscriber
	// that fell too far behind; graphql-ws clients treat it as retryable:
	// they reconnect and subscribe again.
	closeTryAgainLater = 1013
	// closeGoingAway (RFC 6455 1001) closes every socket when the gateway
	// shuts down; clients reconnect (to another replica) and subscribe again.
	closeGoingAway = 1001
)

// connSlot carries a websocket from Accept to the operations on it: the
// subscriptions' contexts derive from the upgrade request's, so a drop
// reported with a subscription's context can close its socket.
type connSlot struct {
	mu sync.Mutex
	c  *guardConn
}

type connSlotKey struct{}

// withConnSlot gives each websocket upgrade request a connSlot.
func withConnSlot(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			r = r.WithContext(context.WithValue(r.Context(), connSlotKey{}, &connSlot{}))
		}
		next.ServeHTTP(w, r)
	})
}

// closeSocket closes the websocket that ctx belongs to with code and
// reason, without waiting for the peer. It reports whether there was one.
func closeSocket(ctx context.Context, code int, reason string) bool {
	if s, ok := ctx.Value(streamSlotKey{}).(*streamSlot); ok { // a multipart stream: its error part, then its end
		s.fail(reason)
		return true
	}
	slot, ok := ctx.Value(connSlotKey{}).(*connSlot)
	if !ok {
		return false
	}
	slot.mu.Lock()
	c := slot.c
	slot.mu.Unlock()
	if c == nil {
		return false
	}
	c.fail(code, reason)
	return true
}

// protocolGuard enforces the graphql-transport-ws rules that gqlgen answers
// with a generic 1002: it closes the socket with the protocol's own codes for
// a bad message, a subscribe before connection_init, a duplicate
// subscription id, a second connection_init, and a missing
// connection_init. Sockets of both protocols are registered in the
// request's connSlot so that a dropped subscriber's socket can be closed.
type protocolGuard struct {
	inner       transport.WebsocketImplementation
	initTimeout time.Duration
	open        *sockets // every open websocket, for a shutdown that says goodbye
}

// sockets is the set of open websockets. A socket leaves it when gqlgen
// closes it, at the end of its connection's handler.
type sockets struct {
	mu    sync.Mutex
	conns map[*guardConn]struct{}
	open  sync.WaitGroup // one per socket in conns
}

func newSockets() *sockets { return &sockets{conns: map[*guardConn]struct{}{}} }

func (s *sockets) add(c *guardConn) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.open.Add(1)
	s.mu.Unlock()
}

func (s *sockets) remove(c *guardConn) {
	s.mu.Lock()
	if _, ok := s.conns[c]; ok {
		delete(s.conns, c)
		s.open.Done()
	}
	s.mu.Unlock()
}

// closeAll closes every open websocket with code and reason and waits until
// they are gone or ctx ends. It returns how many there were and whether all
// are gone.
func (s *sockets) closeAll(ctx context.Context, code int, reason string) (int, bool) {
	s.mu.Lock()
	all := make([]*guardConn, 0, len(s.conns))
	for c := range s.conns {
		all = append(all, c)
	}
	s.mu.Unlock()
	for _, c := range all {
		c.fail(code, reason)
	}
	done := make(chan struct{})
	go func() { s.open.Wait(); close(done) }()
	select {
	case <-done:
		return len(all), true
	case <-ctx.Done():
		return len(all), false
	}
}

func (s *sockets) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (g protocolGuard) Accept(w http.ResponseWriter, r *http.Request, o transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	c, err := g.inner.Accept(w, r, o)
	if err != nil {
		return c, err
	}
	gc := &guardConn{WebsocketConn: c, strict: c.Subprotocol() == "graphql-transport-ws", active: map[string]bool{}, open: g.open}
	if g.open != nil {
		g.open.add(gc)
	}
	if slot, ok := r.Context().Value(connSlotKey{}).(*connSlot); ok {
		slot.mu.Lock()
		slot.c = gc
		slot.mu.Unlock()
	}
	if !gc.strict {
		return gc, nil
	}
	gc.timer = time.AfterFunc(g.initTimeout, func() {
		gc.mu.Lock()
		inited := gc.inited
		gc.mu.Unlock()
		if !inited {
			gc.fail(closeInitTimeout, "Connection initialisation timeout")
		}
	})
	return gc, nil
}

type guardConn struct {
	transport.WebsocketConn
	open   *sockets
	strict bool // graphql-transport-ws: check the messages
	mu     sync.Mutex
	inited bool
	failed bool
	active map[string]bool
	timer  *time.Timer
}

// fail closes the socket with code and msg; nothing is written after it.
func (c *guardConn) fail(code int, msg string) {
	c.mu.Lock()
	if c.failed {
		c.mu.Unlock()
		return
	}
	c.failed = true
	c.mu.Unlock()
	_ = c.WebsocketConn.WriteClose(code, msg)
	_ = c.WebsocketConn.Close()
}

func (c *guardConn) NextReader() (int, io.Reader, error) {
	for {
		mt, r, err := c.WebsocketConn.NextReader()
		if err != nil || !c.strict {
			return mt, r, err
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return mt, nil, err
		}
		m, ok := parseMessage(b)
		if !ok {
			c.fail(closeBadMessage, "Invalid message received")
			return mt, nil, transport.ErrWebsocketClosed
		}
		c.mu.Lock()
		inited := c.inited
		c.mu.Unlock()
		// A ping may come at any time, before connection_init too, and must
		// be answered with a pong (PROTOCOL.md); gqlgen would close the
		// socket with 1002 for anything but connection_init first.
		if !inited && (m.Type == "ping" || m.Type == "pong") {
			if m.Type == "ping" {
				if err := c.WriteJSON(map[string]string{"type": "pong"}); err != nil {
					return mt, nil, err
				}
			}
			continue
		}
		return c.check(mt, m, b)
	}
}

// check applies the protocol's rules to one message read after the
// handshake: it closes the socket with the code that fits, or hands the
// message on to gqlgen.
func (c *guardConn) check(mt int, m message, b []byte) (int, io.Reader, error) {
	c.mu.Lock()
	code, msg := 0, ""
	switch m.Type {
	case "connection_init":
		if c.inited {
			code, msg = closeTooManyInitReqs, "Too many initialisation requests"
		}
		c.inited = true
	case "subscribe":
		switch {
		case !c.inited:
			code, msg = closeUnauthorized, "Unauthorized"
		case m.ID == "":
			code, msg = closeBadMessage, "Invalid message received"
		case c.active[m.ID]:
			code, msg = closeDuplicateID, "Subscriber for "+m.ID+" already exists"
		default:
			c.active[m.ID] = true
		}
	case "complete":
		if !c.inited { // the protocol allows nothing but connection_init and ping/pong before it
			code, msg = closeUnauthorized, "Unauthorized"
		} else if m.ID == "" {
			code, msg = closeBadMessage, "Invalid message received"
		}
		delete(c.active, m.ID)
	case "ping", "pong":
	default:
		code, msg = closeBadMessage, "Invalid message received"
	}
	c.mu.Unlock()
	if code != 0 {
		c.fail(code, msg)
		return mt, nil, transport.ErrWebsocketClosed
	}
	return mt, bytes.NewReader(b), nil
}

// message is what the guard reads of a graphql-transport-ws message.
type message struct{ Type, ID string }

// parseMessage reads a message's type and id by their exact names (Go's
// JSON decoding matches field names in any case; gqlgen then sees another
// message than the guard did) and checks that both are strings.
func parseMessage(b []byte) (message, bool) {
	var raw map[string]json.RawMessage
	if json.Unmarshal(b, &raw) != nil {
		return message{}, false
	}
	var m message
	if json.Unmarshal(raw["type"], &m.Type) != nil || m.Type == "" {
		return message{}, false
	}
	if id, ok := raw["id"]; ok && json.Unmarshal(id, &m.ID) != nil {
		return message{}, false
	}
	return m, true
}

func (c *guardConn) WriteJSON(v any) error {
	c.mu.Lock()
	failed := c.failed
	c.mu.Unlock()
	if failed { // closed with a reason: no complete after it
		return transport.ErrWebsocketClosed
	}
	if !c.strict {
		return c.WebsocketConn.WriteJSON(v)
	}
	if b, err := json.Marshal(v); err == nil {
		if m, ok := parseMessage(b); ok && (m.Type == "complete" || m.Type == "error") && m.ID != "" {
			c.mu.Lock()
			delete(c.active, m.ID)
			c.mu.Unlock()
		}
	}
	return c.WebsocketConn.WriteJSON(v)
}

func (c *guardConn) Close() error {
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.open != nil {
		c.open.remove(c)
	}
	return c.WebsocketConn.Close()
}

func (c *guardConn) SetReadLimit(limit int64) {
	if l, ok := c.WebsocketConn.(transport.WebsocketReadLimiter); ok {
		l.SetReadLimit(limit)
	}
}

func (c *guardConn) SetReadDeadline(t time.Time) error {
	if d, ok := c.WebsocketConn.(transport.WebsocketReadDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return nil
}
