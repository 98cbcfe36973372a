package main

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestClaimCache: a claim that succeeded is not asked again for its user
// within the TTL; another user, an expired entry and a refused claim are
// asked again; the cache stays within its size.
func TestClaimCache(t *testing.T) {
	next := &owners{} // "taken" belongs to zed
	counted := &countingOwners{next: next}
	c := newClaimCache(counted, time.Minute, 3)
	now := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return now }
	steps := []struct {
		name          string
		advance       time.Duration
		session, user string
		wantErr       bool
		wantCalls     int // calls that reached the memory so far
	}{
		{"first claim asks", 0, "s1", "ana", false, 1},
		{"the same claim again: remembered", time.Second, "s1", "ana", false, 1},
		{"another user: asked, refused", 0, "s1", "bob", true, 2},
		{"the owner again: still remembered", 0, "s1", "ana", false, 2},
		{"a refused claim is not remembered", 0, "taken", "ana", true, 3},
		{"refused again: asked again", 0, "taken", "ana", true, 4},
		{"after the TTL: asked again", time.Minute, "s1", "ana", false, 5},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		err := c.Claim(t.Context(), st.session, st.user)
		if (err != nil) != st.wantErr || counted.calls != st.wantCalls {
			t.Fatalf("%s: err %v, %d calls; want error %v, %d calls", st.name, err, counted.calls, st.wantErr, st.wantCalls)
		}
	}
	for i := range 10 {
		if err := c.Claim(t.Context(), fmt.Sprintf("many-%d", i), "ana"); err != nil {
			t.Fatal(err)
		}
		if n := len(c.of); n > 3 {
			t.Fatalf("%d sessions remembered; want at most 3", n)
		}
	}
}

type countingOwners struct {
	next  Owners
	calls int
}

func (c *countingOwners) Claim(ctx context.Context, sessionID, userID string) error {
	c.calls++
	return c.next.Claim(ctx, sessionID, userID)
}
