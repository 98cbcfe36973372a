package graph

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

func chatInput(in model.SendMessageInput) (ChatInput, error) {
	if err := contract.CheckID("userId", in.UserID); err != nil {
		return ChatInput{}, err
	}
	if err := contract.CheckMessage(in.Text, in.Tags); err != nil {
		return ChatInput{}, err
	}
	out := ChatInput{UserID: in.UserID, Text: in.Text, Tags: in.Tags}
	if in.OnBusy != nil {
		out.OnBusy = contract.BusyPolicy(*in.OnBusy)
	}
	if in.SessionID != nil {
		if err := contract.CheckID("sessionId", *in.SessionID); err != nil {
			return ChatInput{}, err
		}
		out.SessionID = *in.SessionID
	}
	if in.IdempotencyKey != nil {
		if err := contract.CheckIdempotencyKey("idempotencyKey", *in.IdempotencyKey); err != nil {
			return ChatInput{}, err
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
	m := &model.Message{Role: role, Content: e.Content, Timestamp: e.Timestamp, Cursor: messageCursor(e.Seq), ToolCalls: make([]*model.ToolCall, len(e.ToolCalls))}
	for i, c := range e.ToolCalls {
		m.ToolCalls[i] = model.ToolCallOf(c)
	}
	return m
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

func toReply(r contract.ChatReply) *model.ChatReply {
	return &model.ChatReply{UserID: r.UserID, SessionID: r.Metadata.SessionID, Reply: r.Reply, InstanceID: r.InstanceID,
		Status: toStatus(r.Status), Timestamp: r.Metadata.Timestamp}
}

func toRun(r contract.ChatRun) *model.ChatRun {
	return &model.ChatRun{
		InstanceID: r.InstanceID, Status: toStatus(r.Status), Stage: opt(r.Stage),
		UserID: opt(r.UserID), SessionID: opt(r.SessionID), Reply: r.Reply, Error: opt(r.Error), Timestamp: r.Timestamp,
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func toTool(t contract.ToolInfo) *model.Tool {
	return &model.Tool{Name: t.Name, Server: opt(t.Server), Description: t.Description, ReadOnly: t.ReadOnly}
}
