package services

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stacktest"
)

// TestManyConcurrentTurns is the stress test of the workflow engine: a few
// hundred turns started at once (DACA_STRESS_TURNS, default 300), each
// polled until it ends; every one must complete. On Dapr 1.16.5 without a
// patched durabletask-go a few in a hundred got stuck for ever
// (dapr/dapr#9641); 1.18 runs unpatched, and this test is the evidence.
// `make stress` runs it several times.
func TestManyConcurrentTurns(t *testing.T) {
	st := stacktest.Stack(t)
	n := 300
	if v, err := strconv.Atoi(os.Getenv("DACA_STRESS_TURNS")); err == nil && v > 0 {
		n = v
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	problems := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := stacktest.Call(ctx, http.MethodPost, chatURL(st, "chat/async"),
				map[string]any{"user_id": fmt.Sprint("stress", i%7), "text": fmt.Sprint("hi ", i)}, token(st)...)
			id, _ := r.JSON["instance_id"].(string)
			if err != nil || r.Status != http.StatusAccepted || id == "" {
				problems <- fmt.Sprintf("turn %d not started: %v %d %s", i, err, r.Status, r.Body)
				return
			}
			for ctx.Err() == nil {
				r, err = stacktest.Call(ctx, http.MethodGet, chatURL(st, "chat/"+id), nil, token(st)...)
				status := contract.RunStatus(fmt.Sprint(r.JSON["status"]))
				if err == nil && status.Terminal() {
					if status != contract.RunCompleted {
						problems <- fmt.Sprintf("%s ended %s: %v", id, status, r.JSON["error"])
					}
					return
				}
				time.Sleep(100 * time.Millisecond) // this client's polling interval, not synchronisation
			}
			problems <- fmt.Sprintf("stuck: %s %v %v", id, r.JSON["status"], r.JSON["stage"])
		}()
	}
	wg.Wait()
	close(problems)
	failed := 0
	for p := range problems {
		failed++
		t.Error(p)
	}
	t.Logf("%d concurrent turns: %d ended otherwise than COMPLETED, in %s", n, failed, time.Since(start).Round(time.Millisecond))
}
