package graph

import (
	"context"
	"strings"
	"unicode/utf8"

	"github.com/daca-go/daca/gateway/backend"
	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/httpx"
	"github.com/daca-go/daca/internal/memory"
)

// Limits of a message, as chat-service enforces them.
const (
	maxText = 16 << 10
	maxTags = 32
	maxTag  = 64
	maxKey  = 255
)

func checkID(field, v string) error {
	if !httpx.ValidID(v) {
		return apperr.New(apperr.Invalid, "%s must match ^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$", field)
	}
	return nil
}

func chatInput(in model.SendMessageInput) (backend.ChatInput, error) {
	if err := checkID("userId", in.UserID); err != nil {
		return backend.ChatInput{}, err
	}
	if strings.TrimSpace(in.Text) == "" {
		return backend.ChatInput{}, apperr.New(apperr.Invalid, "Message text cannot be empty")
	}
	if len(in.Text) > maxText {
		return backend.ChatInput{}, apperr.New(apperr.Invalid, "Message text is longer than %d bytes", maxText)
	}
	out := backend.ChatInput{UserID: in.UserID, Text: in.Text, Tags: in.Tags}
	if in.SessionID != nil {
		if err := checkID("sessionId", *in.SessionID); err != nil {
			return backend.ChatInput{}, err
		}
		out.SessionID = *in.SessionID
	}
	if len(in.Tags) > maxTags {
		return backend.ChatInput{}, apperr.New(apperr.Invalid, "at most %d tags", maxTags)
	}
	for _, t := range in.Tags {
		if len(t) > maxTag {
			return backend.ChatInput{}, apperr.New(apperr.Invalid, "a tag is longer than %d bytes", maxTag)
		}
	}
	if in.IdempotencyKey != nil {
		k := *in.IdempotencyKey
		if k == "" || len(k) > maxKey || !utf8.ValidString(k) || strings.ContainsAny(k, "\r\n\x00") {
			return backend.ChatInput{}, apperr.New(apperr.Invalid, "idempotencyKey must be 1 to %d printable characters", maxKey)
		}
		out.IdempotencyKey = k
	}
	return out, nil
}

func toMemory(userID string, p memory.Profile) *model.Memory {
	return &model.Memory{UserID: userID, Name: p.Name, PreferredStyle: p.PreferredStyle, UserSummary: p.UserSummary}
}

func toMessage(e memory.Entry) *model.Message {
	role := model.RoleUser
	if e.Role == "assistant" {
		role = model.RoleAssistant
	}
	return &model.Message{Role: role, Content: e.Content, Timestamp: e.Timestamp}
}

func toStatus(s string) model.ChatStatus {
	st := model.ChatStatus(strings.ToUpper(s))
	if st.IsValid() {
		return st
	}
	if st == "CANCELED" {
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
	if err := checkID("userId", userID); err != nil {
		return err
	}
	return r.Guard.User(ctx, userID)
}

// forSession checks a session id argument and that the caller may use it.
func (r *Resolver) forSession(ctx context.Context, sessionID string) error {
	if err := checkID("sessionId", sessionID); err != nil {
		return err
	}
	return r.ownSession(ctx, sessionID)
}

// mayChat checks that the caller may send as userID and is within the
// per-user limit of chat turns.
func (r *Resolver) mayChat(ctx context.Context, userID string) error {
	if err := r.Guard.User(ctx, userID); err != nil {
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
	return r.Guard.User(ctx, run.UserID)
}
