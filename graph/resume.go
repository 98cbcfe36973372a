package graph

import (
	"context"
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

// A conversation event's cursor is when its turn ended and its id (the
// turn's instance id): events are ordered by both, and a subscriber that
// resumes after a cursor gets every event ordered after it.
type eventKey struct {
	at int64 // unix nanoseconds
	id string
}

func (k eventKey) less(o eventKey) bool {
	return k.at < o.at || k.at == o.at && k.id < o.id
}

const eventCursorPrefix = "c1:"

// EventCursor is the cursor of the conversation event id whose turn ended
// at at.
func EventCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(eventCursorPrefix + strconv.FormatInt(at.UnixNano(), 10) + ":" + id))
}

func parseEventCursor(c string) (eventKey, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		if rest, ok := strings.CutPrefix(string(b), eventCursorPrefix); ok {
			if ns, id, ok := strings.Cut(rest, ":"); ok && contract.ValidID(id) {
				if at, err := strconv.ParseInt(ns, 10, 64); err == nil {
					return eventKey{at, id}, nil
				}
			}
		}
	}
	return eventKey{}, apperr.New(apperr.Invalid, "after is not a cursor of this API (take it from an event's cursor)")
}

func keyOf(ev *model.ConversationEvent) eventKey {
	k, err := parseEventCursor(ev.Cursor)
	if err != nil {
		return eventKey{id: ev.EventID}
	}
	return k
}

// replayWindow is how much earlier than the cursor a session's last change
// may be and still hold events after it (clocks of replicas differ).
const replayWindow = time.Minute

// resumeConversations subscribes to the live events first (so nothing
// published from then on is missed), then collects what the subscriber
// missed after `after`: the events of the memory service's history and this
// replica's recent ones (published, perhaps not yet applied to the history),
// in order and each once; then it hands on the live events not replayed.
func (r *Resolver) resumeConversations(ctx context.Context, after eventKey, sessionID, userID *string,
	match func(*model.ConversationEvent) bool) (<-chan *model.ConversationEvent, error) {
	ctx, cancel := context.WithCancel(ctx)
	live := r.Conversations.Subscribe(ctx, match, nil) // read by the replay goroutine
	missed, err := r.missedEvents(ctx, after, sessionID, userID)
	if err != nil {
		cancel()
		return nil, err
	}
	for _, ev := range r.Conversations.Recent(match) {
		if after.less(keyOf(ev)) {
			missed = append(missed, ev)
		}
	}
	type keyed struct {
		k  eventKey
		ev *model.ConversationEvent
	}
	order := make([]keyed, len(missed))
	for i, ev := range missed {
		order[i] = keyed{keyOf(ev), ev}
	}
	slices.SortStableFunc(order, func(a, b keyed) int {
		switch {
		case a.k.less(b.k):
			return -1
		case b.k.less(a.k):
			return 1
		}
		return 0
	})
	replayed := map[string]bool{}
	out := make(chan *model.ConversationEvent, len(order)+1)
	for _, o := range order {
		if !replayed[o.ev.EventID] {
			replayed[o.ev.EventID] = true
			out <- o.ev
		}
	}
	go func() {
		defer cancel()
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-live:
				if !ok {
					return // dropped as too slow: the socket is being closed
				}
				if replayed[ev.EventID] || !after.less(keyOf(ev)) {
					continue
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// missedEvents reads the events after `after` from the memory service's
// history: of the session, or of the user's sessions changed since shortly
// before the cursor (the most recent contract.MaxBatch). With both filters,
// a session that is not the user's has none.
func (r *Resolver) missedEvents(ctx context.Context, after eventKey, sessionID, userID *string) ([]*model.ConversationEvent, error) {
	histories := map[string][]contract.Entry{}
	owners := map[string]string{}
	if sessionID != nil {
		owner, err := r.Backend.SessionOwner(ctx, *sessionID)
		if err != nil {
			return nil, err
		}
		if owner == "" || userID != nil && owner != *userID {
			return nil, nil
		}
		h, err := r.Backend.Conversation(ctx, *sessionID)
		if err != nil {
			return nil, err
		}
		histories[*sessionID], owners[*sessionID] = h, owner
	} else {
		list, err := r.Backend.Sessions(ctx, *userID)
		if err != nil {
			return nil, err
		}
		since := time.Unix(0, after.at).Add(-replayWindow)
		var ids []string
		for _, s := range list { // most recently active first
			if s.UpdatedAt.Before(since) || len(ids) == contract.MaxBatch {
				break
			}
			ids = append(ids, s.SessionID)
			owners[s.SessionID] = *userID
		}
		if len(ids) > 0 {
			if histories, err = r.Backend.Conversations(ctx, ids, 0); err != nil {
				return nil, err
			}
		}
	}
	var out []*model.ConversationEvent
	for session, h := range histories {
		for i := 0; i+1 < len(h); i++ {
			u, a := h[i], h[i+1]
			if u.EventID == "" || u.EventID != a.EventID || u.Role != contract.RoleUser || a.Role != contract.RoleAssistant {
				continue
			}
			i++
			ev := &model.ConversationEvent{EventID: u.EventID, UserID: owners[session], SessionID: session,
				UserMessage: u.Content, AssistantReply: a.Content, Cursor: EventCursor(u.EventAt, u.EventID)}
			if after.less(keyOf(ev)) {
				out = append(out, ev)
			}
		}
	}
	return out, nil
}
