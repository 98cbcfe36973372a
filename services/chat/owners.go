package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/apperr"
)

// memoryOwners claims sessions at agent-memory-service (api.ClaimSession).
type memoryOwners struct{ memory api.Memory }

// Claim implements Owners. When the memory service cannot be asked, the
// turn is not started (a session's owner is never guessed).
func (m memoryOwners) Claim(ctx context.Context, sessionID, userID string) error {
	err := m.memory.Claim(ctx, sessionID, userID)
	switch {
	case err == nil:
		return nil
	case apperr.CodeOf(err) == apperr.Forbidden && !errors.Is(err, api.ErrSidecar):
		return apperr.New(apperr.Invalid, "session_id %s belongs to another user: use a session of your own, or none for a new one", sessionID)
	}
	return apperr.Wrap(apperr.Unavailable, err, "agent-memory-service is unavailable; the turn was not started")
}

// How long, and for how many sessions, chat-service remembers a claim.
const (
	claimTTL  = 10 * time.Minute
	maxClaims = 10000
)

// claimCache remembers the sessions whose claim succeeded for a while, so
// that the turns that follow in a session skip the call to the memory
// service (a session keeps its owner until it is deleted). A session deleted
// and claimed by another user within ttl may still pass here for its former
// owner: fetch_context reads history only of a session the turn's user owns
// (the memory answers an empty one otherwise) and the memory refuses the
// turn's event, so nothing of the new owner's reaches the former one.
type claimCache struct {
	next Owners
	ttl  time.Duration
	max  int
	now  func() time.Time

	mu sync.Mutex
	of map[string]claimed
}

type claimed struct {
	user string
	at   time.Time
}

func newClaimCache(next Owners, ttl time.Duration, max int) *claimCache {
	return &claimCache{next: next, ttl: ttl, max: max, now: time.Now, of: map[string]claimed{}}
}

// Claim implements Owners.
func (c *claimCache) Claim(ctx context.Context, sessionID, userID string) error {
	now := c.now()
	c.mu.Lock()
	e, ok := c.of[sessionID]
	c.mu.Unlock()
	if ok && e.user == userID && now.Sub(e.at) < c.ttl {
		return nil
	}
	if err := c.next.Claim(ctx, sessionID, userID); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.of) >= c.max {
		for id, e := range c.of {
			if now.Sub(e.at) >= c.ttl {
				delete(c.of, id)
			}
		}
		if len(c.of) >= c.max {
			clear(c.of) // all fresh: start over rather than grow
		}
	}
	c.of[sessionID] = claimed{userID, now}
	return nil
}
