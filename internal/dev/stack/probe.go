package stack

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/daca-go/daca/internal/dev/proc"
)

// waitFor polls check until it succeeds, the deadline passes, ctx ends, or
// the watched process exits.
func waitFor(ctx context.Context, timeout time.Duration, watch *proc.Process, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		var exited <-chan struct{}
		if watch != nil {
			exited = watch.Done()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return watch.Exited()
		case <-time.After(150 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still failing after %s: %w", timeout, last)
		}
	}
}

var probe = &http.Client{Timeout: 2 * time.Second}

func httpOK(url string) error {
	resp, err := probe.Get(url)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
