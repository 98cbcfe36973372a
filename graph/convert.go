package graph

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/daca-go/daca/gateway/backend"
	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

func chatInput(in model.SendMessageInput) (backend.ChatInput, error) {
	if err := contract.CheckID("userId", in.UserID); err != nil {
		return backend.ChatInput{}, err
	}
	if err := contract.CheckMessage(in.Text, in.Tags); err != nil {
		return backend.ChatInput{}, err
	}
	out := backend.ChatInput{UserID: in.UserID, Text: in.Text, Tags: in.Tags}
	if in.SessionID != nil {
		if err := contract.CheckID("sessionId", *in.SessionID); err != nil {
			return backend.ChatInput{}, err
		}
		out.SessionID = *in.SessionID
	}
	if in.IdempotencyKey != nil {
		if err := contract.CheckIdempotencyKey("idempotencyKey", *in.IdempotencyKey); err != nil {
			return backend.ChatInput{}, err
		}
		out.IdempotencyKey = *in.IdempotencyKey
	}
	return out, nil
}

func toMemory(userID string, p contract.Profile) *model.Memory {
	return &model.Memory{UserID: userID, Name: p.Name, PreferredStyle: p.PreferredStyle, UserSummary: p.UserSummary}
}

func toMessage(e contract.Entry) *model.Message {
	role := model.RoleUser
	if e.Role == contract.RoleAssistant {
		role = model.RoleAssistant
	}
	return &model.Message{Role: role, Content: e.Content, Timestamp: e.Timestamp, Cursor: messageCursor(e.Seq)}
}

// cursorPrefix marks a history cursor (and its version).
const cursorPrefix = "m1:"

// messageCursor is the opaque cursor of the message numbered seq.
func messageCursor(seq int) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.Itoa(seq)))
}

// parseMessageCursor returns the message number of a cursor.
func parseMessageCursor(c string) (int, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		if n, ok := strings.CutPrefix(string(b), cursorPrefix); ok {
			if seq, err := strconv.Atoi(n); err == nil && seq > 0 {
				return seq, nil
			}
		}
	}
	return 0, apperr.New(apperr.Invalid, "before is not a cursor of this API (take it from a message's cursor)")
}

func toStatus(s contract.RunStatus) model.ChatStatus {
	st := model.ChatStatus(s)
	if st.IsValid() {
		return st
	}
	if s == contract.RunCanceled {
		return model.ChatStatusTerminated
	}
	return model.ChatStatusPending
}

func opt(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func toRun(r backend.Run) *model.ChatRun {
	return &model.ChatRun{
		InstanceID: r.InstanceID, Status: toStatus(r.Status), Stage: opt(r.Stage),
		UserID: opt(r.UserID), SessionID: opt(r.SessionID), Reply: r.Reply, Error: opt(r.Error), Timestamp: r.Timestamp,
	}
}

// forUser checks a user id argument and that the caller may act for it.
func (r *Resolver) forUser(ctx context.Context, userID string) error {
	if err := contract.CheckID("userId", userID); err != nil {
		return err
	}
	return r.Guard.MayActAs(ctx, userID)
}

// forSession checks a session id argument and that the caller may use it.
func (r *Resolver) forSession(ctx context.Context, sessionID string) error {
	if err := contract.CheckID("sessionId", sessionID); err != nil {
		return err
	}
	return r.ownSession(ctx, sessionID)
}

// mayChat checks that the caller may send as in.UserID, on in.SessionID
// when given (a session belongs to the user who started it: another user's
// is refused, FORBIDDEN; in AUTH_MODE=none chat-service refuses it with
// BAD_USER_INPUT), and is within the per-user limit of chat turns.
func (r *Resolver) mayChat(ctx context.Context, in backend.ChatInput) error {
	if err := r.Guard.MayActAs(ctx, in.UserID); err != nil {
		return err
	}
	if in.SessionID != "" && r.Guard.Enabled() {
		owner, err := r.Backend.SessionOwner(ctx, in.SessionID)
		if err != nil {
			return err
		}
		if owner != "" && owner != in.UserID {
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

// errNotYours is the answer for a session or turn the caller may not see,
// whether it belongs to someone else or does not exist: the two look the
// same.
var errNotYours = apperr.New(apperr.Forbidden, "you may only access your own memory and sessions")

// ownSession checks that the caller may read or change a session: an admin,
// or the user the session belongs to (one lookup of its owner).
func (r *Resolver) ownSession(ctx context.Context, sessionID string) error {
	if !r.Guard.Enabled() {
		return nil
	}
	id, err := r.Guard.Require(ctx)
	if err != nil || id.Admin {
		return err
	}
	owner, err := r.Backend.SessionOwner(ctx, sessionID)
	if err != nil {
		return err
	}
	if owner != id.Subject {
		return errNotYours
	}
	return nil
}

// ownRun checks a turn id and returns the turn when the caller may see it;
// an unknown turn and another user's get the same NOT_FOUND.
func (r *Resolver) ownRun(ctx context.Context, instanceID string) (*backend.Run, error) {
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

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// visibleRun returns run when the caller may see it, nil otherwise: another
// user's turn looks like an unknown one. Unauthenticated callers get
// UNAUTHENTICATED.
func (r *Resolver) visibleRun(ctx context.Context, run *backend.Run) (*backend.Run, error) {
	if !r.Guard.Enabled() || run == nil {
		return run, nil
	}
	id, err := r.Guard.Require(ctx)
	if err != nil {
		return nil, err
	}
	if id.Admin || id.Subject == run.UserID {
		return run, nil
	}
	return nil, nil
}

// authMode is AUTH_MODE as the health query reports it.
func (r *Resolver) authMode() string {
	if r.Guard.Enabled() {
		return "jwt"
	}
	return "none"
}
