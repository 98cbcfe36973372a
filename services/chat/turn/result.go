package turn

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/contract"
)

// Result is a completed turn as save_conversation records it, before it
// publishes the turn's event (state key ResultKey, kept a day): GET
// /chat/{id} answers COMPLETED from it while the workflow itself is still
// finishing, and the session's next turn reads the turns the memory has
// not applied yet from it (recent).
type Result struct {
	ID    string                       `json:"id"`              // the turn's
	After string                       `json:"after,omitempty"` // the session's turn before
	Event contract.ConversationUpdated `json:"event"`
	// Stopped: the turn was stopped before it was saved (Client.Stop), and
	// a last round that ends after it saves nothing.
	Stopped bool `json:"stopped,omitempty"`
}

// errStopped is a save refused because the turn was stopped first.
var errStopped = errors.New("the turn was stopped before its reply was saved")

// markStopped records that turn id is stopped, unless its result was
// recorded first: then it answers that result (the turn has completed).
func markStopped(ctx context.Context, st State, id string) (*Result, error) {
	r, err := saveResult(ctx, st, Result{ID: id, Stopped: true}, true)
	if err != nil {
		return nil, err
	}
	if r.Stopped {
		return nil, nil
	}
	return &r, nil
}

// ResultKey is the state key of turn id's Result.
func ResultKey(id string) string { return "turn-result|" + id }

const resultTTL = "86400"

// saveResult records r as turn id's Result and answers the Result that
// stands: with once, a Result recorded before stays (first write) and is
// answered; otherwise r replaces it.
func saveResult(ctx context.Context, st State, r Result, once bool) (Result, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return r, err
	}
	meta := map[string]string{"ttlInSeconds": resultTTL}
	if !once {
		return r, st.SaveStateWithETag(ctx, contract.StateStore, ResultKey(r.ID), b, "", meta)
	}
	err = st.SaveStateWithETag(ctx, contract.StateStore, ResultKey(r.ID), b, "", meta, dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite))
	if err == nil {
		return r, nil
	}
	// Refused: a Result exists (an earlier execution of the round), or the
	// store failed.
	old, rerr := readResult(ctx, st, r.ID)
	if rerr != nil || old == nil {
		return r, err
	}
	return *old, nil
}

// readResult reads turn id's Result; nil when there is none.
func readResult(ctx context.Context, st State, id string) (*Result, error) {
	item, err := st.GetState(ctx, contract.StateStore, ResultKey(id), nil)
	if err != nil || item == nil || len(item.Value) == 0 {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(item.Value, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// recent completes a session's history with its turns before this one
// (after, and the turns before it) whose events the memory has not applied
// yet: their entries, oldest first, after the history's. It reads back at
// most as many turns as the prompt holds.
func recent(ctx context.Context, st State, history []contract.Entry, after string) ([]contract.Entry, error) {
	applied := func(id string) bool {
		return slices.ContainsFunc(history, func(e contract.Entry) bool { return e.EventID == id })
	}
	var missing []Result
	for id := after; id != "" && !applied(id) && len(missing) < contract.ContextEntries/2; {
		r, err := readResult(ctx, st, id)
		if err != nil {
			return history, err
		}
		if r == nil || r.Stopped {
			break // ended without a result (failed, stopped): nothing to add
		}
		missing = append(missing, *r)
		id = r.After
	}
	out := history
	for i := len(missing) - 1; i >= 0; i-- {
		r := missing[i]
		ev := r.Event
		out = append(out,
			contract.Entry{Role: contract.RoleUser, Content: ev.UserMessage, Timestamp: ev.SentAt, EventID: r.ID, EventAt: ev.SentAt},
			contract.Entry{Role: contract.RoleAssistant, Content: ev.AssistantReply, Timestamp: ev.SentAt, EventID: r.ID, EventAt: ev.SentAt, ToolCalls: ev.ToolCalls})
	}
	return out, nil
}
