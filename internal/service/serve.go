// Listen and Serve: an HTTP server that runs until its context ends, then
// shuts down gracefully (stops accepting, lets requests in flight finish).
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// Listen opens the listener early, so a port conflict fails at start.
func Listen(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

// Serve serves h on ln until ctx ends, then shuts down within grace. Each
// drain runs when the shutdown starts, beside it and within the same grace
// period: it closes and waits for what the server does not track (hijacked
// connections such as websockets).
func Serve(ctx context.Context, ln net.Listener, h http.Handler, grace time.Duration, log *slog.Logger, drains ...func(context.Context)) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: no new requests; waiting for those in flight", "grace", grace.String())
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var wg sync.WaitGroup
	for _, drain := range drains {
		wg.Add(1)
		go func() { defer wg.Done(); drain(sctx) }()
	}
	err := srv.Shutdown(sctx)
	wg.Wait()
	if errors.Is(err, context.DeadlineExceeded) {
		log.Warn("shutdown grace period over; closing remaining connections")
		return srv.Close()
	}
	return err
}

// Healthcheck asks the app's own health endpoint on loopback and returns the
// process exit code (0 healthy). Containers without a shell run
// `<app> healthcheck` as their health check.
func Healthcheck(port int, path string) int {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		fmt.Fprintln(os.Stderr, "unhealthy:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		fmt.Fprintln(os.Stderr, "unhealthy:", resp.Status)
		return 1
	}
	return 0
}
