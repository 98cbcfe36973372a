package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/daprc"
)

// memoryOwners claims sessions at agent-memory-service, through the
// sidecar's HTTP API (PUT /owners/{session_id}).
type memoryOwners struct{ sidecar *daprc.HTTP }

// Claim implements Owners. When the memory service cannot be asked, the
// turn is not started (a session's owner is never guessed).
func (m memoryOwners) Claim(ctx context.Context, sessionID, userID string) error {
	body, _ := json.Marshal(contract.Owner{SessionID: sessionID, UserID: userID})
	status, out, err := m.sidecar.Invoke(ctx, contract.MemoryApp, "owners/"+sessionID, http.MethodPut, body, nil)
	switch {
	case err == nil && status == http.StatusOK:
		return nil
	case err == nil && status == http.StatusForbidden && !daprc.IsDaprError(out):
		return apperr.New(apperr.Invalid, "session_id %s belongs to another user: use a session of your own, or none for a new one", sessionID)
	case err == nil:
		err = fmt.Errorf("claiming session %s: HTTP %d: %.200s", sessionID, status, out)
	}
	return apperr.Wrap(apperr.Unavailable, err, "agent-memory-service is unavailable; the turn was not started")
}
