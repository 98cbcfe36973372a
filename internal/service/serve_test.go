package service

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/dev/testkit"
)

// TestServeDrainsAtShutdown: when ctx ends, Serve runs every drain and waits
// for it (within the grace period) before it returns.
func TestServeDrainsAtShutdown(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var drained atomic.Int32
	slow := func(ctx context.Context) {
		select {
		case <-time.After(100 * time.Millisecond):
			drained.Add(1)
		case <-ctx.Done():
		}
	}
	errc := make(chan error, 1)
	go func() {
		errc <- Serve(ctx, ln, http.NotFoundHandler(), 5*time.Second, testkit.Quiet(), slow, slow)
	}()
	if resp, err := http.Get("http://" + ln.Addr().String()); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	if drained.Load() != 0 {
		t.Fatal("drained before the shutdown")
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if n := drained.Load(); n != 2 {
		t.Fatalf("%d drains finished before Serve returned; want 2", n)
	}
}
