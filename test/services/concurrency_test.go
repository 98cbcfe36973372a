package services

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/dev/stacktest"
)

// 100 turns started at once, each polled until it completes: none is lost
// or stuck. (Without the patched durabletask-go in tools/dapr, a few in a
// hundred were: dapr/dapr#9641.)
func TestConcurrentAsyncTurnsComplete(t *testing.T) {
	st := stacktest.Stack(t)
	var wg sync.WaitGroup
	errs := make(chan string, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := stacktest.Do(t, http.MethodPost, chatURL(st, "chat/async"), map[string]any{"user_id": fmt.Sprint("stress", i%7), "text": fmt.Sprint("hi ", i)}, token(st)...)
			id, _ := r.JSON["instance_id"].(string)
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				r = stacktest.Do(t, http.MethodGet, chatURL(st, "chat/"+id), nil, token(st)...)
				if r.JSON["status"] == "COMPLETED" {
					return
				}
				time.Sleep(50 * time.Millisecond) // polling interval of this client, not synchronisation
			}
			errs <- id + " " + fmt.Sprint(r.JSON["status"], r.JSON["stage"])
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("stuck: %s", e)
	}
}
