package turn

import (
	"context"
	"encoding/json"
	"slices"

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
}

// ResultKey is the state key of turn id's Result.
func ResultKey(id string) string { return "turn-result|" + id }

const resultTTL = "86400"

func saveResult(ctx context.Context, st State, id string, r Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return st.SaveStateWithETag(ctx, contract.StateStore, ResultKey(id), b, "", map[string]string{"ttlInSeconds": resultTTL})
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
		if r == nil {
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
