package wstransport

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// operation is one operation (subscribe/start message) on a connection.
//
// gqlgen's transport gives every operation a goroutine that loops on the
// executor's response handler, and a subscription's goroutine waits in it
// for each value: 8 KiB of stack per idle subscription. Here a subscription
// whose source took the operation's waker (Waker) holds no goroutine while
// it waits: the source calls wake once for each value it queued and once
// when it closes, and the connection's delivery goroutine calls the response
// handler exactly that many times, so that it never blocks. Every other
// operation (queries, mutations, a subscription whose source does not wake)
// runs as in gqlgen, on a goroutine of its own until it ends.
type operation struct {
	c      *wsConnection
	id     string
	rc     *graphql.OperationContext
	cancel context.CancelFunc
	push   atomic.Bool // a source took the waker

	// Guarded by c.dmu until set (responses set: dispatched); read without
	// it by the delivery goroutine, which gets the operation after they were.
	ctx       context.Context
	responses graphql.ResponseHandler

	// Guarded by c.dmu.
	pending int  // wakes not yet delivered
	queued  bool // in c.ready, or being drained
	done    bool // ended: wakes are ignored
}

type operationKey struct{}

// Waker returns the wake function of the websocket subscription that ctx
// belongs to, or nil outside one (queries, mutations, other transports).
// A source that takes it must call it once after each value it sends on
// the channel the resolver returned, and once after it closes that channel
// (it must close it when ctx ends); the subscription then holds no
// goroutine between values. Only the first caller of an operation gets it.
func Waker(ctx context.Context) func() {
	op, _ := ctx.Value(operationKey{}).(*operation)
	if op == nil || op.rc.Operation == nil || op.rc.Operation.Operation != ast.Subscription {
		return nil
	}
	if !op.push.CompareAndSwap(false, true) {
		return nil
	}
	return op.wake
}

// run dispatches the operation. A subscription whose source took the waker
// is left to the delivery goroutine; anything else is answered here.
func (op *operation) run(ctx context.Context) {
	errCtx := ctx
	defer func() {
		if r := recover(); r != nil {
			op.finish(errCtx, r)
		}
	}()
	responses, ctx := op.c.exec.DispatchOperation(ctx, op.rc)
	if !op.push.Load() {
		for {
			response := responses(ctx)
			if response == nil {
				break
			}
			op.c.sendResponse(op.id, response)
		}
		op.finish(errCtx, nil)
		return
	}
	c := op.c
	c.dmu.Lock()
	op.ctx, op.responses = ctx, responses
	signal := op.enqueueLocked()
	c.dmu.Unlock()
	if signal {
		c.signal()
	}
}

// wake records that the source has one more value (or its end) ready.
func (op *operation) wake() {
	c := op.c
	c.dmu.Lock()
	op.pending++
	signal := op.enqueueLocked()
	c.dmu.Unlock()
	if signal {
		c.signal()
	}
}

// enqueueLocked puts the operation in the connection's ready list if it
// has something to deliver and is not there yet. c.dmu is held.
func (op *operation) enqueueLocked() bool {
	if op.responses == nil || op.queued || op.done || op.pending == 0 {
		return false
	}
	op.queued = true
	op.c.ready = append(op.c.ready, op)
	return true
}

func (c *wsConnection) signal() {
	select {
	case c.wakeUp <- struct{}{}:
	default: // already signalled
	}
}

// deliver is the connection's delivery goroutine: it sends the values of
// its woken subscriptions until the connection ends.
func (c *wsConnection) deliver(ctx context.Context) {
	var batch []*operation
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wakeUp:
		}
		c.dmu.Lock()
		batch, c.ready = c.ready, batch[:0]
		c.dmu.Unlock()
		for i, op := range batch {
			op.drain()
			batch[i] = nil
		}
	}
}

// drain delivers every value the operation was woken for.
func (op *operation) drain() {
	c := op.c
	for {
		c.dmu.Lock()
		if op.done || op.pending == 0 {
			op.queued = false
			c.dmu.Unlock()
			return
		}
		op.pending--
		c.dmu.Unlock()
		if ended, p := op.deliverOne(); ended {
			op.finish(op.ctx, p)
			return
		}
	}
}

// deliverOne calls the response handler once and sends what it answered.
// It reports whether the operation ended (no response, or a panic, which
// it returns, as gqlgen's goroutine recovers one in either).
func (op *operation) deliverOne() (ended bool, panicked any) {
	defer func() {
		if r := recover(); r != nil {
			ended, panicked = true, r
		}
	}()
	response := op.responses(op.ctx)
	if response == nil {
		return true, nil
	}
	op.c.sendResponse(op.id, response)
	return false, nil
}

// finish ends the operation as gqlgen's transport does: an error for a
// panic, the subscription's errors or complete, and its context cancelled.
func (op *operation) finish(ctx context.Context, panicked any) {
	c := op.c
	c.dmu.Lock()
	op.done = true
	c.dmu.Unlock()
	if panicked != nil {
		err := op.rc.Recover(ctx, panicked)
		var gqlerr *gqlerror.Error
		if !errors.As(err, &gqlerr) {
			gqlerr = &gqlerror.Error{}
			if err != nil {
				gqlerr.Message = err.Error()
			}
		}
		c.sendError(op.id, gqlerr)
	}
	if errs := getSubscriptionError(ctx); len(errs) != 0 {
		c.sendError(op.id, errs...)
	} else if c.ctx.Err() == nil {
		// A cancelled connection context closes the socket; complete would signal a normal end.
		c.complete(op.id)
	}
	c.mu.Lock()
	delete(c.active, op.id)
	c.mu.Unlock()
	op.cancel()
}

type initPayloadKey struct{}

func withInitPayload(ctx context.Context, payload InitPayload) context.Context {
	return context.WithValue(ctx, initPayloadKey{}, payload)
}

// GetInitPayload returns the connection_init payload of the websocket that
// ctx belongs to.
func GetInitPayload(ctx context.Context) InitPayload {
	payload, _ := ctx.Value(initPayloadKey{}).(InitPayload)
	return payload
}
