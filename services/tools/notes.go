package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/daprc"
)

// Limits of the notes.
const (
	maxNoteText  = 1000 // bytes of one note
	maxNotes     = 100  // notes of one user
	casAttempts  = 8    // tries of a write that lost a race
	noteIDLength = 8    // hex characters
)

// State is the part of the sidecar's state API the notes use.
type State interface {
	GetState(ctx context.Context, storeName, key string, meta map[string]string) (*dapr.StateItem, error)
	SaveStateWithETag(ctx context.Context, storeName, key string, data []byte, etag string, meta map[string]string, so ...dapr.StateOption) error
}

// notes keeps each user's notes as one list in the Dapr state store,
// changed by compare-and-swap on its ETag (first-write-wins), so concurrent
// calls for one user never lose a note.
type notes struct{ state State }

// Note is one note.
type Note struct {
	ID      string    `json:"id"`
	Text    string    `json:"text"`
	Created time.Time `json:"created"`
	CallID  string    `json:"call_id,omitempty"` // the tool call that made it
}

func key(user string) string { return "notes|" + user }

func (n *notes) read(ctx context.Context, user string) ([]Note, string, error) {
	item, err := n.state.GetState(ctx, contract.StateStore, key(user), nil)
	if err != nil {
		return nil, "", err
	}
	var list []Note
	if item == nil || len(item.Value) == 0 {
		return nil, "", nil
	}
	if err := json.Unmarshal(item.Value, &list); err != nil {
		return nil, "", fmt.Errorf("notes of %s unreadable: %w", user, err)
	}
	return list, item.Etag, nil
}

// change applies f to the user's list and writes it back, trying again
// when another write came first. f returns the tool's answer, or a failed
// one (nothing written).
func (n *notes) change(ctx context.Context, user string, f func([]Note) ([]Note, *mcp.CallToolResult)) (*mcp.CallToolResult, error) {
	for range casAttempts {
		list, etag, err := n.read(ctx, user)
		if err != nil {
			return nil, err
		}
		next, res := f(list)
		if res.IsError {
			return res, nil
		}
		b, _ := json.Marshal(next)
		err = n.state.SaveStateWithETag(ctx, contract.StateStore, key(user), b, etag, nil,
			dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite), dapr.WithConsistency(dapr.StateConsistencyStrong))
		if err == nil {
			return res, nil
		}
		// Aborted: the ETag no longer matches (or first-write on a new key
		// lost): read again and retry.
		if !daprc.IsETagMismatch(err) {
			return nil, err
		}
	}
	return nil, errors.New("the notes changed too often at once; try again")
}

type createIn struct {
	User   string `json:"_user_id" jsonschema:"set by chat-service: the user the note is for"`
	CallID string `json:"_call_id,omitempty" jsonschema:"set by chat-service: the call, the same for every attempt"`
	Text   string `json:"text" jsonschema:"what to note or remind of"`
}

func (n *notes) create(ctx context.Context, _ *mcp.CallToolRequest, in createIn) (*mcp.CallToolResult, any, error) {
	u, bad := user(in.User)
	if bad != nil {
		return bad, nil, nil
	}
	t := strings.TrimSpace(in.Text)
	if t == "" || len(t) > maxNoteText {
		return failed("text must hold 1 to %d bytes", maxNoteText), nil, nil
	}
	id := make([]byte, noteIDLength/2)
	rand.Read(id)
	note := Note{ID: hex.EncodeToString(id), Text: t, Created: time.Now().UTC()}
	note.CallID = in.CallID
	res, err := n.change(ctx, u, func(list []Note) ([]Note, *mcp.CallToolResult) {
		for _, old := range list {
			if in.CallID != "" && old.CallID == in.CallID { // a repeated attempt of one call: nothing more
				return list, text("noted (id %s): %s", old.ID, old.Text)
			}
		}
		if len(list) >= maxNotes {
			return nil, failed("the user has %d notes, the most there may be: delete one first", maxNotes)
		}
		return append(list, note), text("noted (id %s): %s", note.ID, note.Text)
	})
	return res, nil, err
}

type listIn struct {
	User string `json:"_user_id" jsonschema:"set by chat-service: whose notes"`
}

func (n *notes) list(ctx context.Context, _ *mcp.CallToolRequest, in listIn) (*mcp.CallToolResult, any, error) {
	u, bad := user(in.User)
	if bad != nil {
		return bad, nil, nil
	}
	list, _, err := n.read(ctx, u)
	if err != nil {
		return nil, nil, err
	}
	if len(list) == 0 {
		return text("no notes"), nil, nil
	}
	var b strings.Builder
	for _, note := range list {
		fmt.Fprintf(&b, "%s: %s\n", note.ID, note.Text)
	}
	return text("%s", strings.TrimSuffix(b.String(), "\n")), nil, nil
}

type deleteIn struct {
	User   string `json:"_user_id" jsonschema:"set by chat-service: whose note"`
	CallID string `json:"_call_id,omitempty" jsonschema:"set by chat-service: the call, the same for every attempt"`
	ID     string `json:"id" jsonschema:"the note's id, from list_notes"`
}

func (n *notes) delete(ctx context.Context, _ *mcp.CallToolRequest, in deleteIn) (*mcp.CallToolResult, any, error) {
	u, bad := user(in.User)
	if bad != nil {
		return bad, nil, nil
	}
	res, err := n.change(ctx, u, func(list []Note) ([]Note, *mcp.CallToolResult) {
		for i, note := range list {
			if note.ID == in.ID {
				return append(list[:i:i], list[i+1:]...), text("deleted note %s", in.ID)
			}
		}
		return nil, failed("no note with id %q", in.ID)
	})
	return res, nil, err
}
