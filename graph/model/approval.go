package model

import "github.com/daca-go/daca/internal/contract"

// ApprovalOf is a tool call's request for a decision as clients see it.
func ApprovalOf(a contract.Approval) *Approval {
	out := &Approval{ID: a.ID, InstanceID: a.InstanceID, SessionID: a.SessionID, UserID: a.UserID, Server: a.Server, Tool: a.Tool,
		Arguments: a.Arguments, RequestedAt: a.RequestedAt, ExpiresAt: a.ExpiresAt, Status: ApprovalStatus(a.Status)}
	if a.Reason != "" {
		out.Reason = &a.Reason
	}
	if a.DecidedBy != "" {
		out.DecidedBy = &a.DecidedBy
	}
	return out
}
