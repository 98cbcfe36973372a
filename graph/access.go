package graph

import (
	"context"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

// The access rules, all of them: every argument that names a user, a
// session or a turn is checked against the caller here. A caller may act
// for itself; an admin for everyone; with AUTH_MODE=none (no Callers, or
// not Enabled) every argument is trusted.
//
// What is not the caller's looks like what does not exist: a session gets
// errNotYours whether it is another user's or nobody's, and a turn the
// same NOT_FOUND (or null) as an unknown one.

// errNotYours is the answer for a user or session the caller may not use,
// whether it belongs to someone else or does not exist.
var errNotYours = apperr.New(apperr.Forbidden, "you may only access your own memory and sessions")

// caller returns who calls; checked is false when callers are not
// authenticated (every argument is trusted). An unauthenticated caller of a
// gateway that authenticates gets UNAUTHENTICATED.
func (r *Resolver) caller(ctx context.Context) (c Caller, checked bool, err error) {
	if r.Callers == nil || !r.Callers.Enabled() {
		return Caller{}, false, nil
	}
	c, err = r.Callers.Caller(ctx)
	return c, true, err
}

// mayActAs checks that the caller may act for userID.
func (r *Resolver) mayActAs(ctx context.Context, userID string) error {
	c, checked, err := r.caller(ctx)
	if !checked || err != nil {
		return err
	}
	if c.Admin || c.Subject == userID {
		return nil
	}
	return errNotYours
}

// forUser checks a user id argument and that the caller may act for it.
func (r *Resolver) forUser(ctx context.Context, userID string) error {
	if err := contract.CheckID("userId", userID); err != nil {
		return err
	}
	return r.mayActAs(ctx, userID)
}

// forSession checks a session id argument and that the caller may use it:
// an admin, or the user the session belongs to (one lookup of its owner).
func (r *Resolver) forSession(ctx context.Context, sessionID string) error {
	if err := contract.CheckID("sessionId", sessionID); err != nil {
		return err
	}
	c, checked, err := r.caller(ctx)
	if !checked || err != nil || c.Admin {
		return err
	}
	owner, err := r.Backend.SessionOwner(ctx, sessionID)
	if err != nil {
		return err
	}
	if owner != c.Subject {
		return errNotYours
	}
	return nil
}

// mayChat checks that the caller may send as in.UserID, on in.SessionID
// when given (a session belongs to the user who started it: another user's
// is refused, FORBIDDEN; in AUTH_MODE=none chat-service refuses it with
// BAD_USER_INPUT), and is within the per-user limit of chat turns.
func (r *Resolver) mayChat(ctx context.Context, in ChatInput) error {
	if err := r.mayActAs(ctx, in.UserID); err != nil {
		return err
	}
	if _, checked, _ := r.caller(ctx); checked && in.SessionID != "" {
		owner, err := r.Backend.SessionOwner(ctx, in.SessionID)
		if err != nil {
			return err
		}
		if owner != "" && owner != in.UserID { // "": a new session of the caller's choosing
			return errNotYours
		}
	}
	if r.Turns == nil {
		return nil
	}
	if ok, wait := r.Turns.Allow(ctx, in.UserID); !ok {
		return &apperr.Error{Code: apperr.RateLimited, Message: "too many messages; slow down", RetryAfter: wait}
	}
	return nil
}

// ownRun checks a turn id and returns the turn when the caller may see it;
// an unknown turn and another user's get the same NOT_FOUND.
func (r *Resolver) ownRun(ctx context.Context, instanceID string) (*contract.ChatRun, error) {
	if err := contract.CheckID("instanceId", instanceID); err != nil {
		return nil, err
	}
	run, err := r.Backend.ChatRun(ctx, instanceID)
	if err != nil {
		return nil, err
	}
	if run, err = r.visibleRun(ctx, run); err != nil {
		return nil, err
	}
	if run == nil {
		return nil, apperr.New(apperr.NotFound, "chat turn %s not found", instanceID)
	}
	return run, nil
}

// visibleRun returns run when the caller may see it, nil otherwise: another
// user's turn looks like an unknown one.
func (r *Resolver) visibleRun(ctx context.Context, run *contract.ChatRun) (*contract.ChatRun, error) {
	if run == nil {
		return nil, nil
	}
	c, checked, err := r.caller(ctx)
	if !checked {
		return run, nil
	}
	if err != nil {
		return nil, err
	}
	if c.Admin || c.Subject == run.UserID {
		return run, nil
	}
	return nil, nil
}

// conversationFilter checks the arguments of conversationUpdated and
// narrows them to what the caller may see: a user only ever sees their own
// conversations, and a session given must be the caller's (answered as the
// conversation query answers it).
func (r *Resolver) conversationFilter(ctx context.Context, sessionID, userID *string) (*string, error) {
	if sessionID == nil && userID == nil {
		return nil, apperr.New(apperr.Invalid, "give sessionId, userId or both")
	}
	if sessionID != nil {
		if err := contract.CheckID("sessionId", *sessionID); err != nil {
			return nil, err
		}
	}
	if userID != nil {
		if err := contract.CheckID("userId", *userID); err != nil {
			return nil, err
		}
	}
	c, checked, err := r.caller(ctx)
	if !checked || err != nil || c.Admin {
		return userID, err
	}
	if userID != nil && *userID != c.Subject {
		return nil, errNotYours
	}
	if sessionID != nil {
		owner, err := r.Backend.SessionOwner(ctx, *sessionID)
		if err != nil {
			return nil, err
		}
		if owner != c.Subject {
			return nil, errNotYours
		}
	}
	return &c.Subject, nil
}

// authMode is AUTH_MODE as the health query reports it.
func (r *Resolver) authMode() string {
	if r.Callers != nil && r.Callers.Enabled() {
		return "jwt"
	}
	return "none"
}

// ownApproval checks an approval id and returns the request when the caller
// may decide it (the turn's user, or an admin); an unknown request and
// another user's get the same NOT_FOUND. decidedBy is who decides: the
// caller, or with AUTH_MODE=none the turn's user.
func (r *Resolver) ownApproval(ctx context.Context, id string) (a *contract.Approval, decidedBy string, err error) {
	if err := contract.CheckID("approvalId", id); err != nil {
		return nil, "", err
	}
	c, checked, err := r.caller(ctx)
	if err != nil {
		return nil, "", err
	}
	if a, err = r.Backend.Approval(ctx, id); err != nil {
		return nil, "", err
	}
	if a == nil || checked && !c.Admin && a.UserID != c.Subject {
		return nil, "", apperr.New(apperr.NotFound, "approval %s not found", id)
	}
	if !checked {
		return a, a.UserID, nil
	}
	return a, c.Subject, nil
}
