package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// TestSummaryWaitSurvivesKills: a turn's summary that waits for its user's
// pause (SUMMARY_DEBOUNCE, 3 s here) is made even when the memory service,
// its sidecar, Dapr's scheduler or Redis is killed while it waits and stays
// down past the time it was due: the user's job is in the scheduler, and
// it is delivered (again, its failure policy says, for an hour) until the
// memory makes the summary. Counted from outside: the
// user's document in Redis and the MemoryUpdated events on the stream.
func TestSummaryWaitSurvivesKills(t *testing.T) {
	st := stacktest.Stack(t)
	chatURL := st.App(contract.ChatApp).SidecarURL() + "/v1.0/invoke/" + contract.ChatApp + "/method/chat"
	for i, row := range []struct {
		process string
		down    time.Duration // past the job's due time (3 s)
	}{
		{contract.MemoryApp, 5 * time.Second},
		{contract.MemoryApp + "-dapr", 5 * time.Second},
		{"scheduler", 5 * time.Second},
		// longer than Dapr's default retries of a failed job would last
		// (three, a second apart)
		{"redis", 10 * time.Second},
	} {
		process := row.process
		t.Run(process, func(t *testing.T) {
			if err := stacktest.Lost(); err != nil {
				t.Fatalf("not run: a process died unexpectedly earlier: %.300v", err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			user, session := fmt.Sprintf("summary-%d-%d", i, time.Now().UnixNano()%1e6), fmt.Sprintf("summary-s%d", i)
			body := map[string]any{"user_id": user, "text": "hello, I like sailing", "metadata": map[string]string{"session_id": session}}
			// Retried with its key until it completes: the row before may
			// have just restarted a process the turn needs.
			testkit.WaitFor(t, time.Minute, "the turn", func() error {
				resp, err := stacktest.Call(ctx, http.MethodPost, chatURL, body, "dapr-api-token", st.APIToken, contract.IdempotencyHeader, user)
				if err != nil || resp.JSON["status"] != string(contract.RunCompleted) {
					return fmt.Errorf("%v %v", resp.JSON, err)
				}
				return nil
			})
			// The turn applied, its summary waiting: counted in the user's
			// document and in the session's history (the memory writes them
			// in that order; a kill between the two leaves the history to the
			// event's redelivery, a minute later, which is not this test's).
			var applied time.Time
			testkit.WaitFor(t, 30*time.Second, "the turn applied, its summary waiting", func() error {
				u, err := userDoc(st, user)
				if err != nil || u.PendingTurns != 1 {
					return fmt.Errorf("%+v %v", u, err)
				}
				if n := st.HistoryLen(ctx, contract.MemoryApp, session); n != 2 {
					return fmt.Errorf("%d history entries", n)
				}
				applied = time.Now()
				return nil
			})
			before := memoryUpdates(t, st, user)
			if _, err := st.RestartAfter(ctx, process, row.down); err != nil {
				t.Fatalf("restart: %v", err)
			}
			if waited := time.Since(applied); waited < row.down {
				t.Fatalf("down for %s only", waited)
			}
			testkit.WaitFor(t, time.Minute, "the summary made after the restart", func() error {
				u, err := userDoc(st, user)
				if err != nil || u.PendingTurns != 0 || !strings.Contains(u.UserSummary, "sailing") {
					return fmt.Errorf("%+v %v", u, err)
				}
				return nil
			})
			testkit.WaitFor(t, 30*time.Second, "its MemoryUpdated", func() error {
				if n := memoryUpdates(t, st, user); n != before+1 {
					return fmt.Errorf("%d MemoryUpdated for %s; want %d", n, user, before+1)
				}
				return nil
			})
		})
	}
}

// memUser is the part of the memory's user document the test reads.
type memUser struct {
	UserSummary  string `json:"user_summary"`
	PendingTurns int    `json:"pending_turns"`
}

// userDoc reads user's document from Redis itself (the state store's hash,
// prefixed with the memory's app id).
func userDoc(st interface{ RedisDo(...string) (any, error) }, user string) (memUser, error) {
	var u memUser
	v, err := st.RedisDo("HGET", contract.MemoryApp+"||user:"+user, "data")
	if err != nil {
		return u, err
	}
	s, _ := v.(string)
	if s == "" {
		return u, fmt.Errorf("no document")
	}
	// The state store keeps the JSON as a string value.
	var raw string
	if json.Unmarshal([]byte(s), &raw) == nil {
		s = raw
	}
	return u, json.Unmarshal([]byte(s), &u)
}

// memoryUpdates counts the MemoryUpdated events of user on the stream.
func memoryUpdates(t *testing.T, st interface{ RedisDo(...string) (any, error) }, user string) int {
	v, err := st.RedisDo("XRANGE", contract.TopicMemoryUpdates, "-", "+")
	if err != nil {
		t.Fatalf("XRANGE: %v", err)
	}
	n := 0
	entries, _ := v.([]any)
	for _, e := range entries {
		if strings.Contains(fmt.Sprint(e), `\"user_id\":\"`+user+`\"`) || strings.Contains(fmt.Sprint(e), `"user_id":"`+user+`"`) {
			n++
		}
	}
	return n
}
