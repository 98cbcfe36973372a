// Package daprc connects to the app's own Dapr sidecar with the go-sdk,
// waiting until the sidecar answers.
package daprc

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	dapr "github.com/dapr/go-sdk/client"
)

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
	delay := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		c, err := dapr.NewClientWithAddressContext(dctx, addr)
		cancel()
		if err == nil {
			if tok := os.Getenv("DAPR_API_TOKEN"); tok != "" {
				c.WithAuthToken(tok)
			}
			return c, nil
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Info("waiting for the Dapr sidecar", "addr", addr, "attempt", attempt)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dapr sidecar at %s not reachable: %w", addr, ctx.Err())
		case <-time.After(delay):
		}
		if delay < 2*time.Second {
			delay *= 2
		}
	}
}
