package api

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

func TestRoutePath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		route Route
		args  []string
		want  string
	}{
		{GetMemory, []string{"ana"}, "memories/ana"},
		{InitializeMemory, []string{"ana"}, "memories/ana/initialize"},
		{GetConversations, nil, "conversations/batch"},
		{CancelChat, []string{"chat-1"}, "chat/chat-1/cancel"},
		{GetOwner, []string{"a b/c"}, "owners/a%20b%2Fc"},
		{Health, nil, "health"},
	}
	for _, tt := range tests {
		if got := tt.route.Path(tt.args...); got != tt.want {
			t.Errorf("%s.Path(%q) = %q; want %q", tt.route.Pattern, tt.args, got, tt.want)
		}
	}
	for _, args := range [][]string{nil, {"a", "b"}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("GetMemory.Path(%q) did not panic", args)
				}
			}()
			GetMemory.Path(args...)
		}()
	}
}

// caller records the requests and answers each from a table by method.
type caller struct {
	got     []Request
	answers map[string]any
	errs    map[string]error
}

func (c *caller) Call(_ context.Context, r Request) ([]byte, error) {
	c.got = append(c.got, r)
	if err := c.errs[r.Method]; err != nil {
		return nil, err
	}
	return json.Marshal(c.answers[r.Method])
}

// TestClients: each client method calls its route with its verb, path,
// body and key, and decodes the answer; a 404 reads as "none".
func TestClients(t *testing.T) {
	t.Parallel()
	c := &caller{
		answers: map[string]any{
			"memories/ana":                         contract.Profile{Name: "Ana"},
			"conversations/s1?last=10&user_id=ana": contract.HistoryReply{History: []contract.Entry{{Content: "q"}}},
			"conversations/batch":                  contract.ConversationsReply{Conversations: []contract.Conversation{{SessionID: "s1", History: []contract.Entry{{Content: "q"}}}}},
			"owners/s1":                            contract.Owner{SessionID: "s1", UserID: "ana"},
			"chat":                                 contract.ChatReply{Reply: "hi"},
			"chat/chat-1":                          contract.ChatRun{InstanceID: "chat-1", Status: contract.RunRunning},
			"conversations/s2":                     nil,
		},
		errs: map[string]error{"owners/s9": apperr.New(apperr.NotFound, "session s9 not found"), "chat/chat-x": apperr.New(apperr.NotFound, "no"),
			"conversations/s9": apperr.New(apperr.NotFound, "no")},
	}
	m, ch := Memory{Caller: c}, ChatService{Caller: c}
	ctx := context.Background()
	if p, err := m.Profile(ctx, "ana"); err != nil || p.Name != "Ana" {
		t.Fatalf("Profile = %+v, %v", p, err)
	}
	if h, err := m.History(ctx, "s1", HistoryOptions{Last: 10, UserID: "ana"}); err != nil || len(h) != 1 {
		t.Fatalf("History = %+v, %v", h, err)
	}
	if hs, err := m.Histories(ctx, []string{"s1"}, 2); err != nil || len(hs["s1"]) != 1 {
		t.Fatalf("Histories = %+v, %v", hs, err)
	}
	if u, err := m.Owner(ctx, "s1"); err != nil || u != "ana" {
		t.Fatalf("Owner = %q, %v", u, err)
	}
	if u, err := m.Owner(ctx, "s9"); err != nil || u != "" {
		t.Fatalf("Owner of an unknown session = %q, %v; want none", u, err)
	}
	if ok, err := m.DeleteConversation(ctx, "s9"); ok || err != nil {
		t.Fatalf("DeleteConversation of an unknown session = %v, %v", ok, err)
	}
	if rep, err := ch.Send(ctx, contract.ChatRequest{UserID: "ana", Text: "hello"}, "key-1"); err != nil || rep.Reply != "hi" {
		t.Fatalf("Send = %+v, %v", rep, err)
	}
	if r, err := ch.Run(ctx, "chat-1"); err != nil || r == nil || r.Status != contract.RunRunning {
		t.Fatalf("Run = %+v, %v", r, err)
	}
	if r, err := ch.Run(ctx, "chat-x"); err != nil || r != nil {
		t.Fatalf("Run of an unknown turn = %+v, %v; want nil", r, err)
	}
	want := []struct{ verb, method, body, key string }{
		{http.MethodGet, "memories/ana", "", ""},
		{http.MethodGet, "conversations/s1?last=10&user_id=ana", "", ""},
		{http.MethodPost, "conversations/batch", `{"session_ids":["s1"],"last":2}`, ""},
		{http.MethodGet, "owners/s1", "", ""},
		{http.MethodGet, "owners/s9", "", ""},
		{http.MethodDelete, "conversations/s9", "", ""},
		{http.MethodPost, "chat", `{"user_id":"ana","text":"hello"}`, "key-1"},
		{http.MethodGet, "chat/chat-1", "", ""},
		{http.MethodGet, "chat/chat-x", "", ""},
	}
	if len(c.got) != len(want) {
		t.Fatalf("%d calls; want %d", len(c.got), len(want))
	}
	for i, w := range want {
		g := c.got[i]
		if g.Verb != w.verb || g.Method != w.method || string(g.Body) != w.body || g.IdempotencyKey != w.key {
			t.Errorf("call %d: %s %s %s %q; want %s %s %s %q", i, g.Verb, g.Method, g.Body, g.IdempotencyKey, w.verb, w.method, w.body, w.key)
		}
	}
}
