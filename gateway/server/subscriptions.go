package server

import (
	"context"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// websocketSubscriptions refuses a subscription that comes neither over a
// websocket nor as Server-Sent Events (Accept: text/event-stream). gqlgen's
// plain POST and GET transports would run it and hold the request open
// until the first event (forever, for a quiet topic), with a subscriber in
// the broker all that time.
type websocketSubscriptions struct{}

var (
	_ graphql.HandlerExtension        = websocketSubscriptions{}
	_ graphql.OperationContextMutator = websocketSubscriptions{}
)

func (websocketSubscriptions) ExtensionName() string                   { return "WebsocketSubscriptions" }
func (websocketSubscriptions) Validate(graphql.ExecutableSchema) error { return nil }

func (websocketSubscriptions) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil || oc.Operation.Operation != ast.Subscription {
		return nil
	}
	if _, ws := ctx.Value(connSlotKey{}).(*connSlot); ws {
		return nil
	}
	if strings.Contains(oc.Headers.Get("Accept"), "text/event-stream") {
		return nil // graphql-sse
	}
	if _, mp := ctx.Value(streamSlotKey{}).(*streamSlot); mp {
		return nil // Apollo's multipart subscriptions
	}
	err := gqlerror.Errorf("subscriptions need a websocket on /graphql (graphql-transport-ws or graphql-ws), Server-Sent Events (Accept: text/event-stream) or Apollo's multipart HTTP (Accept: multipart/mixed;subscriptionSpec=1.0), not a plain HTTP request")
	err.Extensions = map[string]any{"code": "BAD_REQUEST"}
	return err
}
