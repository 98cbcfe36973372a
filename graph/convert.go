package graph

import (
	"context"

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
	return &model.Message{Role: role, Content: e.Content, Timestamp: e.Timestamp}
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

// mayChat checks that the caller may send as userID and is within the
// per-user limit of chat turns.
func (r *Resolver) mayChat(ctx context.Context, userID string) error {
	if err := r.Guard.MayActAs(ctx, userID); err != nil {
		return err
	}
	if r.Turns == nil {
		return nil
	}
	if ok, wait := r.Turns.Allow(ctx, userID); !ok {
		return &apperr.Error{Code: apperr.RateLimited, Message: "too many messages; slow down", RetryAfter: wait}
	}
	return nil
}

// ownSession checks that the caller may read or change a session: an admin,
// or the user the session belongs to.
func (r *Resolver) ownSession(ctx context.Context, sessionID string) error {
	if !r.Guard.Enabled() {
		return nil
	}
	id, err := r.Guard.Require(ctx)
	if err != nil || id.Admin {
		return err
	}
	list, err := r.Backend.Sessions(ctx, id.Subject)
	if err != nil {
		return err
	}
	for _, s := range list {
		if s.SessionID == sessionID {
			return nil
		}
	}
	return apperr.New(apperr.Forbidden, "you may only access your own memory and sessions")
}

// ownRun checks that the caller may see a chat turn.
func (r *Resolver) ownRun(ctx context.Context, run *backend.Run) error {
	if !r.Guard.Enabled() || run == nil {
		return nil
	}
	return r.Guard.MayActAs(ctx, run.UserID)
}

// authMode is AUTH_MODE as the health query reports it.
func (r *Resolver) authMode() string {
	if r.Guard.Enabled() {
		return "jwt"
	}
	return "none"
}
