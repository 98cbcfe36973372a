// Package daprc connects to the app's own Dapr sidecar with the go-sdk,
// waiting until the sidecar answers.
//
// The gRPC connection is our own, with interceptors that add the Dapr API
// token and the W3C trace context to the outgoing metadata of every call.
// (The go-sdk's own token interceptor, v1.13, replaces all outgoing metadata,
// which drops trace context and headers such as Idempotency-Key.)
package daprc

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// Outgoing adds the token and the trace context of ctx to its outgoing gRPC
// metadata, keeping what is already there.
func Outgoing(ctx context.Context, token string) context.Context {
	var pairs []string
	if token != "" {
		pairs = append(pairs, "dapr-api-token", token)
	}
	c := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, c)
	for k, v := range c {
		pairs = append(pairs, k, v)
	}
	if len(pairs) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, pairs...)
}

// Connect dials the sidecar at 127.0.0.1:$DAPR_GRPC_PORT (default 50001),
// retrying until ctx ends. The Dapr API token comes from DAPR_API_TOKEN.
func Connect(ctx context.Context, log *slog.Logger) (dapr.Client, error) {
	port := os.Getenv("DAPR_GRPC_PORT")
	if port == "" {
		port = "50001"
	}
	addr := net.JoinHostPort("127.0.0.1", port)
	if ep := os.Getenv("DAPR_GRPC_ENDPOINT"); ep != "" {
		addr = ep
	}
	return Dial(ctx, addr, os.Getenv("DAPR_API_TOKEN"), log)
}

// Dial connects to the sidecar's gRPC API at addr with the Dapr API token
// (empty: none), retrying until ctx ends.
func Dial(ctx context.Context, addr, token string, log *slog.Logger) (dapr.Client, error) {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(Outgoing(ctx, token), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(Outgoing(ctx, token), desc, cc, method, opts...)
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)),
	)
	if err != nil {
		return nil, fmt.Errorf("dapr sidecar at %s: %w", addr, err)
	}
	conn.Connect()
	for attempt := 1; ; attempt++ {
		st := conn.GetState()
		if st == connectivity.Ready {
			return dapr.NewClientWithConnection(conn), nil
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Info("waiting for the Dapr sidecar", "addr", addr, "state", st.String())
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn.WaitForStateChange(wctx, st)
		cancel()
		if st == connectivity.TransientFailure || st == connectivity.Idle {
			conn.Connect()
		}
		if ctx.Err() != nil {
			conn.Close()
			return nil, fmt.Errorf("dapr sidecar at %s not reachable: %w", addr, ctx.Err())
		}
	}
}
