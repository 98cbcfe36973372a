package wstransport

import (
	"encoding/json"
	"io"

	"github.com/99designs/gqlgen/graphql/handler/transport"
)

// The adapter between a websocket library and this transport is gqlgen's,
// so that an implementation written for gqlgen's transport (such as the
// gateway's protocolGuard around transport.CoderWebsocketImplementation)
// plugs in unchanged.
type (
	WebsocketImplementation = transport.WebsocketImplementation
	WebsocketConn           = transport.WebsocketConn
	WebsocketAcceptOptions  = transport.WebsocketAcceptOptions
	WebsocketReadLimiter    = transport.WebsocketReadLimiter
	WebsocketReadDeadliner  = transport.WebsocketReadDeadliner
	InitPayload             = transport.InitPayload
)

const (
	WebsocketCloseNormalClosure = transport.WebsocketCloseNormalClosure
	WebsocketCloseProtocolError = transport.WebsocketCloseProtocolError
)

// ErrWebsocketClosed is gqlgen's: a WebsocketConn reports a closed peer with it.
var ErrWebsocketClosed = transport.ErrWebsocketClosed

func jsonDecode(r io.Reader, val any) error {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	return dec.Decode(val)
}
