// Package wstransport is gqlgen's websocket transport (graphql-transport-ws
// and the legacy graphql-ws), forked from gqlgen v0.17.98
// (graphql/handler/transport, MIT licence: LICENSE) with one change: a
// subscription whose source wakes the transport (Waker) holds no goroutine
// while it waits for its next value. gqlgen's transport keeps a goroutine
// per operation that waits in the executor's response handler, with the 8 KiB
// stack its setup grew: at 10,000 idle subscriptions, 80 MiB of stacks. Here
// each connection has one delivery goroutine that calls a subscription's
// response handler once per wake, so the call never blocks.
//
// The files copied from gqlgen keep its names (websocket*.go); operation.go
// holds the change and the run of an operation; adapter.go reuses gqlgen's
// websocket adapter types, so that its CoderWebsocketImplementation and any
// implementation written for it plug in unchanged. To follow gqlgen: diff
// its transport/websocket*.go between versions and apply the change here.
package wstransport
