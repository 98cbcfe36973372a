package contract

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/daca-go/daca/internal/apperr"
)

// Approval is a tool call that needs a user's decision before it runs: its
// request, and the decision once there is one. Its id is the call's (the
// turn's instance id, round and place: turn.CallID).
type Approval struct {
	ID          string         `json:"id"`
	InstanceID  string         `json:"instance_id"`
	SessionID   string         `json:"session_id"`
	UserID      string         `json:"user_id"`
	Server      string         `json:"server"`
	Tool        string         `json:"tool"`      // the server's own name of the tool
	Name        string         `json:"name"`      // the tool as the model knows it
	CallID      string         `json:"call_id"`   // the call's id as the model named it
	Arguments   string         `json:"arguments"` // as the model wrote them
	RequestedAt time.Time      `json:"requested_at"`
	ExpiresAt   time.Time      `json:"expires_at"`
	Status      ApprovalStatus `json:"status"`
	Reason      string         `json:"reason,omitempty"`
	DecidedBy   string         `json:"decided_by,omitempty"`
	// TurnEnded: the turn was stopped while the call waited; the request
	// can no longer be decided (Status DENIED).
	TurnEnded bool `json:"turn_ended,omitempty"`
}

// ApprovalStatus is where an approval stands.
type ApprovalStatus string

// Approval statuses.
const (
	ApprovalPending  ApprovalStatus = "PENDING"
	ApprovalApproved ApprovalStatus = "APPROVED"
	ApprovalDenied   ApprovalStatus = "DENIED"
	ApprovalExpired  ApprovalStatus = "EXPIRED"
)

// Decided reports whether the approval has its outcome.
func (a Approval) Decided() bool { return a.Status != ApprovalPending }

// Outcome is what the model is told about a call that was not approved:
// "" for an approved one.
func (a Approval) Outcome() string {
	switch {
	case a.Status == ApprovalApproved:
		return ""
	case a.Status == ApprovalExpired:
		return "denied: timed out (nobody decided in time)"
	case a.Reason != "":
		return "denied by the user: " + a.Reason
	}
	return "denied by the user"
}

// Decision is the body of chat-service's POST /approvals/{approval_id}/decision.
type Decision struct {
	Approve   bool   `json:"approve"`
	Reason    string `json:"reason,omitempty"`
	DecidedBy string `json:"decided_by"`
}

// MaxReason is the longest reason of a decision, in characters.
const MaxReason = 500

// Check validates a decision.
func (d Decision) Check() error {
	if err := CheckID("decided_by", d.DecidedBy); err != nil {
		return err
	}
	if utf8.RuneCountInString(d.Reason) > MaxReason {
		return apperr.New(apperr.Invalid, "reason: at most %d characters", MaxReason)
	}
	if strings.ContainsRune(d.Reason, 0) || !utf8.ValidString(d.Reason) {
		return apperr.New(apperr.Invalid, "reason: valid UTF-8 without NUL characters")
	}
	return nil
}

// ApprovalsReply answers chat-service's GET /approvals?user_id=: the user's
// pending approvals, oldest first.
type ApprovalsReply struct {
	Approvals []Approval `json:"approvals"`
}

// ApprovalEvent is the name of the workflow event that carries the
// decision on approval id to its turn.
func ApprovalEvent(id string) string { return "approval-" + id }

// ApprovalStage is a turn's stage while its call of tool (the model's name
// of it) waits for a decision.
func ApprovalStage(tool string) string { return fmt.Sprintf("%s:%s", StageApproval, tool) }
