package graph_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/99designs/gqlgen/client"
	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/daca-go/daca/gateway/auth"
	"github.com/daca-go/daca/gateway/fanout"
	"github.com/daca-go/daca/gateway/ratelimit"
	"github.com/daca-go/daca/gateway/replies"
	"github.com/daca-go/daca/graph"
	"github.com/daca-go/daca/graph/graphtest"
	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// execClient runs operations against the resolver r with the schema, the
// per-operation loaders (wait long enough that batches do not depend on
// this machine's speed) and errors that carry their apperr code as
// extensions.code (gateway/server maps those to GraphQL codes).
func execClient(r *graph.Resolver, wait time.Duration) *client.Client {
	srv := handler.New(graph.NewExecutableSchema(graph.Config{Resolvers: r}))
	srv.AddTransport(transport.POST{})
	srv.AroundOperations(func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		return next(graph.WithLoaders(ctx, r.Backend, wait))
	})
	srv.SetErrorPresenter(func(ctx context.Context, err error) *gqlerror.Error {
		g := graphql.DefaultErrorPresenter(ctx, err)
		var ae *apperr.Error
		if errors.As(err, &ae) {
			g.Message = ae.Message
			g.Extensions = map[string]any{"code": string(ae.Code)}
		}
		return g
	})
	return client.New(srv)
}

func resolver(f *graphtest.Fake) *graph.Resolver {
	log := testkit.Quiet()
	return &graph.Resolver{Backend: f, Log: log, Runs: graph.NewRunWatch(f.ChatRun, 10*time.Millisecond, log), Replies: replies.New(8, nil)}
}

// as makes the request the caller's (what the gateway's bearer guard does).
func as(id auth.Identity) client.Option {
	return func(r *client.Request) { r.HTTP = r.HTTP.WithContext(auth.WithIdentity(r.HTTP.Context(), id)) }
}

// errOf runs query and returns its first error's apperr code and message.
func errOf(t *testing.T, c *client.Client, query string, opts ...client.Option) (apperr.Code, string) {
	t.Helper()
	resp, err := c.RawPost(query, opts...)
	if err != nil {
		t.Fatal(err)
	}
	code, _, msg := testkit.FirstError(resp.Errors)
	return apperr.Code(code), msg
}

func TestResolvers(t *testing.T) {
	t.Parallel()
	f := graphtest.New()
	f.History["s-tools"] = []contract.Entry{{Role: contract.RoleUser, Content: "convert", Timestamp: graphtest.Time},
		{Role: contract.RoleAssistant, Content: "done", Timestamp: graphtest.Time, ToolCalls: []contract.ToolCall{
			{ID: "c1", Name: "tools_convert_units", Server: "tools", Arguments: `{"value":5}`, Result: "5 km = 5000 m", Status: contract.ToolCompleted},
			{ID: "c2", Name: "get_current_time", Arguments: "{}", Result: "error: x", Status: contract.ToolFailed}}}}
	c := execClient(resolver(f), graph.DefaultLoaderWait)
	tests := []struct {
		name, query string
		want        string
	}{
		{"memory", `{ memory(userId: "ana") { userId name preferredStyle userSummary } }`,
			`{"memory":{"userId":"ana","name":"Ana","preferredStyle":"formal","userSummary":"likes Go"}}`},
		{"memory of a stranger", `{ memory(userId: "zed") { userSummary } }`, `{"memory":{"userSummary":"zed is a new user."}}`},
		{"conversation last 1", `{ conversation(sessionId: "s1", last: 1) { sessionId messages { role content timestamp } } }`,
			`{"conversation":{"sessionId":"s1","messages":[{"role":"ASSISTANT","content":"a","timestamp":"2026-11-29T03:00:00Z"}]}}`},
		{"sessions", `{ sessions(userId: "ana") { sessionId messageCount lastMessage { role } } }`,
			`{"sessions":[{"sessionId":"s1","messageCount":2,"lastMessage":{"role":"ASSISTANT"}}]}`},
		{"sessions with messages", `{ sessions(userId: "ana") { sessionId messages(last: 1) { content } } }`,
			`{"sessions":[{"sessionId":"s1","messages":[{"content":"a"}]}]}`},
		{"chatRun", `{ chatRun(instanceId: "chat-1") { instanceId status reply sessionId } }`,
			`{"chatRun":{"instanceId":"chat-1","status":"COMPLETED","reply":"hi ana","sessionId":"s1"}}`},
		{"unknown chatRun", `{ chatRun(instanceId: "chat-x") { status } }`, `{"chatRun":null}`},
		{"tools", `{ tools { name server readOnly } }`,
			`{"tools":[{"name":"get_current_time","server":null,"readOnly":true},{"name":"tools_create_note","server":"tools","readOnly":false}]}`},
		{"a message with its tool calls", `{ conversation(sessionId: "s-tools") { messages { role toolCalls { id name server arguments result status } } } }`,
			`{"conversation":{"messages":[{"role":"USER","toolCalls":[]},{"role":"ASSISTANT","toolCalls":[{"id":"c1","name":"tools_convert_units","server":"tools","arguments":"{\"value\":5}","result":"5 km = 5000 m","status":"COMPLETED"},{"id":"c2","name":"get_current_time","server":null,"arguments":"{}","result":"error: x","status":"FAILED"}]}]}}`},
		{"health", `{ health { status gateway sidecar llm authMode backends { appId status } } }`,
			`{"health":{"status":"ok","gateway":"ok","sidecar":"ok","llm":"offline","authMode":"none","backends":[{"appId":"chat-service","status":"ok"},{"appId":"agent-memory-service","status":"ok"}]}}`},
		{"sendMessage", `mutation { sendMessage(input: {userId: "ana", text: "hello", idempotencyKey: "k"}) { reply instanceId sessionId status timestamp } }`,
			`{"sendMessage":{"reply":"re: hello","instanceId":"chat-9","sessionId":"s9","status":"COMPLETED","timestamp":"2026-11-29T03:00:00Z"}}`},
		{"startChat", `mutation { startChat(input: {userId: "ana", text: "hello"}) { instanceId status } }`,
			`{"startChat":{"instanceId":"chat-2","status":"PENDING"}}`},
		{"initializeMemory", `mutation { initializeMemory(userId: "ana", input: {name: "A"}) { name } }`, `{"initializeMemory":{"name":"A"}}`},
		{"forgetUser", `mutation { forgetUser(userId: "ana") { userId sessionsDeleted } }`, `{"forgetUser":{"userId":"ana","sessionsDeleted":1}}`},
		{"deleteConversation", `mutation { deleteConversation(sessionId: "s1") }`, `{"deleteConversation":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.RawPost(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Errors != nil {
				t.Fatalf("errors: %s", resp.Errors)
			}
			got, _ := json.Marshal(resp.Data)
			var w any
			json.Unmarshal([]byte(tt.want), &w)
			want, _ := json.Marshal(w)
			if string(got) != string(want) {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
	if f.LastIn.IdempotencyKey != "k" {
		t.Fatalf("idempotency key not passed: %+v", f.LastIn)
	}
}

// TestSessionMessagesBatched checks that the messages of many sessions are
// read in one backend call per operation (no N+1), and that a failing batch
// fails each field with the backend's code.
func TestSessionMessagesBatched(t *testing.T) {
	t.Parallel()
	f := graphtest.New()
	ts := graphtest.Time
	const n = 40
	for i := range n {
		id := fmt.Sprintf("s%d", i+10)
		f.SessionList["ana"] = append(f.SessionList["ana"], contract.SessionInfo{SessionID: id, UpdatedAt: ts, MessageCount: 1})
		f.History[id] = []contract.Entry{{Role: contract.RoleUser, Content: id, Timestamp: ts}}
	}
	// A wide window: the batches below do not depend on how fast this
	// machine starts goroutines.
	c := execClient(resolver(f), 200*time.Millisecond)
	var resp struct {
		Sessions []struct {
			SessionID string
			Messages  []struct{ Content string }
		}
	}
	c.MustPost(`{ sessions(userId: "ana") { sessionId messages { content } } }`, &resp)
	if len(resp.Sessions) != n+1 {
		t.Fatalf("%d sessions; want %d", len(resp.Sessions), n+1)
	}
	for _, s := range resp.Sessions[1:] {
		if len(s.Messages) != 1 || s.Messages[0].Content != s.SessionID {
			t.Fatalf("session %s has messages %+v", s.SessionID, s.Messages)
		}
	}
	if len(f.Batches) != 1 || len(f.Batches[0]) != n+1 {
		t.Fatalf("backend calls: %d (sizes %v); want 1 call with %d ids", len(f.Batches), f.Batches, n+1)
	}
	// A second operation gets fresh loaders: nothing is cached across requests.
	c.MustPost(`{ sessions(userId: "ana") { messages(last: 1) { content } } }`, &resp)
	if len(f.Batches) != 2 {
		t.Fatalf("second request: %d backend calls in all; want 2", len(f.Batches))
	}
	// More sessions than one batch may hold: batches of at most MaxBatch ids.
	for i := range 110 {
		id := fmt.Sprintf("t%d", i)
		f.SessionList["ana"] = append(f.SessionList["ana"], contract.SessionInfo{SessionID: id, UpdatedAt: ts, MessageCount: 1})
		f.History[id] = []contract.Entry{{Role: contract.RoleUser, Content: id, Timestamp: ts}}
	}
	f.Batches = nil
	c.MustPost(`{ sessions(userId: "ana") { sessionId messages { content } } }`, &resp)
	total := 0
	for _, b := range f.Batches {
		if len(b) > contract.MaxBatch {
			t.Fatalf("a batch of %d ids; at most %d", len(b), contract.MaxBatch)
		}
		total += len(b)
	}
	if len(resp.Sessions) != n+111 || len(f.Batches) != 2 || total != n+111 {
		t.Fatalf("%d sessions in %d batches (%d ids); want %d in 2", len(resp.Sessions), len(f.Batches), total, n+111)
	}
	f.ConvErr = apperr.Wrap(apperr.Unavailable, errors.New("dial tcp 127.0.0.1:50001"), "agent-memory-service is unavailable")
	if code, msg := errOf(t, c, `{ sessions(userId: "ana") { messages { content } } }`); code != apperr.Unavailable || msg != "agent-memory-service is unavailable" {
		t.Fatalf("failed batch: %q %q; want Unavailable", code, msg)
	}
	f.ConvErr = nil
	if code, msg := errOf(t, c, `{ sessions(userId: "ana") { messages(last: -1) { content } } }`); code != apperr.Invalid {
		t.Fatalf("negative last: %q %q", code, msg)
	}
}

// TestInputValidation: the resolvers refuse bad arguments before any
// backend call, with the same rules (contract) and words as the services.
func TestInputValidation(t *testing.T) {
	t.Parallel()
	f := graphtest.New()
	f.Err = errors.New("the backend must not be called")
	c := execClient(resolver(f), graph.DefaultLoaderWait)
	tests := []struct {
		name, query string
		code        apperr.Code
		msg         string
	}{
		{"blank text", `mutation { sendMessage(input: {userId: "ana", text: "  "}) { reply } }`, apperr.Invalid, "Message text cannot be empty"},
		{"key injection", `mutation { sendMessage(input: {userId: "a||b", text: "x"}) { reply } }`, apperr.Invalid, "userId must match"},
		{"bad session", `{ conversation(sessionId: "../x") { sessionId } }`, apperr.Invalid, "sessionId must match"},
		{"negative last", `{ conversation(sessionId: "s1", last: -1) { sessionId } }`, apperr.Invalid, "last must not be negative"},
		{"too long", `mutation { sendMessage(input: {userId: "ana", text: "` + strings.Repeat("x", contract.MaxText+1) + `"}) { reply } }`, apperr.TooLarge, "longer than"},
		{"too many tags", `mutation { sendMessage(input: {userId: "ana", text: "x", tags: [` + strings.Repeat(`"t",`, contract.MaxTags+1) + `]}) { reply } }`, apperr.Invalid, "at most"},
		{"empty idempotency key", `mutation { sendMessage(input: {userId: "ana", text: "x", idempotencyKey: ""}) { reply } }`, apperr.Invalid, "idempotencyKey must be"},
		{"control character in key", `mutation { sendMessage(input: {userId: "ana", text: "x", idempotencyKey: "a\tb"}) { reply } }`, apperr.Invalid, "idempotencyKey must be"},
		{"bad instance id", `{ chatRun(instanceId: "a b") { status } }`, apperr.Invalid, "instanceId must match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, msg := errOf(t, c, tt.query)
			if code != tt.code || !strings.Contains(msg, tt.msg) {
				t.Fatalf("%s %q; want %s %q", code, msg, tt.code, tt.msg)
			}
		})
	}
}

func TestTurnLimit(t *testing.T) {
	t.Parallel()
	r := resolver(graphtest.New())
	r.Turns = ratelimit.New(1, 2)
	c := execClient(r, graph.DefaultLoaderWait)
	q := `mutation { sendMessage(input: {userId: "ana", text: "x"}) { reply } }`
	for i := range 2 {
		if code, _ := errOf(t, c, q); code != "" {
			t.Fatalf("message %d refused: %s", i, code)
		}
	}
	if code, _ := errOf(t, c, q); code != apperr.RateLimited {
		t.Fatalf("third message: %s; want RateLimited", code)
	}
	if code, _ := errOf(t, c, strings.Replace(q, "ana", "bo", 1)); code != "" {
		t.Fatalf("another user limited: %s", code)
	}
}

// TestAuthorisation: with AUTH_MODE=jwt every argument that names a user,
// session or turn is checked against the caller.
func TestAuthorisation(t *testing.T) {
	t.Parallel()
	f := graphtest.New()
	f.Runs["chat-bo"] = &contract.ChatRun{InstanceID: "chat-bo", Status: contract.RunRunning, UserID: "bo", SessionID: "s-of-bo"}
	boWaits := *f.Approvals["chat-2-r1-t1"]
	boWaits.ID, boWaits.InstanceID, boWaits.UserID, boWaits.SessionID = "chat-bo-r1-t1", "chat-bo", "bo", "s-of-bo"
	f.Approvals[boWaits.ID] = &boWaits
	r := resolver(f)
	r.Callers = &auth.Guard{Mode: "jwt"}
	c := execClient(r, graph.DefaultLoaderWait)
	ana, admin := as(auth.Identity{Subject: "ana"}), as(auth.Identity{Subject: "root", Admin: true})
	tests := []struct {
		name, query string
		caller      []client.Option
		code        apperr.Code
	}{
		{"anonymous", `{ memory(userId: "ana") { name } }`, nil, apperr.Unauthenticated},
		{"own memory", `{ memory(userId: "ana") { name } }`, []client.Option{ana}, ""},
		{"someone else's memory", `{ memory(userId: "bo") { name } }`, []client.Option{ana}, apperr.Forbidden},
		{"admin reads anyone", `{ memory(userId: "bo") { name } }`, []client.Option{admin}, ""},
		{"send as someone else", `mutation { sendMessage(input: {userId: "bo", text: "x"}) { reply } }`, []client.Option{ana}, apperr.Forbidden},
		{"own session", `{ conversation(sessionId: "s1") { sessionId } }`, []client.Option{ana}, ""},
		{"foreign session", `{ conversation(sessionId: "s-of-bo") { sessionId } }`, []client.Option{ana}, apperr.Forbidden},
		{"unknown session looks like a foreign one", `{ conversation(sessionId: "s-none") { sessionId } }`, []client.Option{ana}, apperr.Forbidden},
		{"delete a foreign session", `mutation { deleteConversation(sessionId: "s-of-bo") }`, []client.Option{ana}, apperr.Forbidden},
		{"a turn on another user's session", `mutation { sendMessage(input: {userId: "ana", text: "x", sessionId: "s-of-bo"}) { reply } }`, []client.Option{ana}, apperr.Forbidden},
		{"a turn started on another user's session", `mutation { startChat(input: {userId: "ana", text: "x", sessionId: "s-of-bo"}) { instanceId } }`, []client.Option{ana}, apperr.Forbidden},
		{"a turn on a new session", `mutation { sendMessage(input: {userId: "ana", text: "x", sessionId: "s-new"}) { reply } }`, []client.Option{ana}, ""},
		{"a turn on her own session", `mutation { sendMessage(input: {userId: "ana", text: "x", sessionId: "s1"}) { reply } }`, []client.Option{ana}, ""},
		{"admin's turn on a user's session as that user", `mutation { sendMessage(input: {userId: "bo", text: "x", sessionId: "s-of-bo"}) { reply } }`, []client.Option{admin}, ""},
		{"own run", `{ chatRun(instanceId: "chat-1") { status } }`, []client.Option{ana}, ""},
		{"anonymous run", `{ chatRun(instanceId: "chat-1") { status } }`, nil, apperr.Unauthenticated},
		{"health is open", `{ health { authMode } }`, nil, ""},
		{"stop someone else's turn", `mutation { cancelChat(instanceId: "chat-bo") { status } }`, []client.Option{ana}, apperr.NotFound},
		{"stop an unknown turn", `mutation { cancelChat(instanceId: "chat-unknown") { status } }`, []client.Option{ana}, apperr.NotFound},
		{"stop anonymously", `mutation { cancelChat(instanceId: "chat-bo") { status } }`, nil, apperr.Unauthenticated},
		{"stop her own ended turn", `mutation { cancelChat(instanceId: "chat-1") { status } }`, []client.Option{ana}, ""},
		{"admin stops anyone's", `mutation { cancelChat(instanceId: "chat-bo") { status } }`, []client.Option{admin}, ""},
		{"own pending approvals", `{ pendingApprovals(userId: "ana") { id } }`, []client.Option{ana}, ""},
		{"someone else's pending approvals", `{ pendingApprovals(userId: "bo") { id } }`, []client.Option{ana}, apperr.Forbidden},
		{"admin reads anyone's approvals", `{ pendingApprovals(userId: "bo") { id } }`, []client.Option{admin}, ""},
		{"own usage", `{ usage(userId: "ana") { tokensIn } }`, []client.Option{ana}, ""},
		{"someone else's usage", `{ usage(userId: "bo") { tokensIn } }`, []client.Option{ana}, apperr.Forbidden},
		{"admin reads anyone's usage", `{ usage(userId: "bo", since: "2026-12-01T10:00:00Z") { tokensIn } }`, []client.Option{admin}, ""},
		{"decide someone else's call", `mutation { decideToolCall(approvalId: "chat-bo-r1-t1", approve: true) { status } }`, []client.Option{ana}, apperr.NotFound},
		{"decide an unknown call", `mutation { decideToolCall(approvalId: "chat-x-r1-t1", approve: true) { status } }`, []client.Option{ana}, apperr.NotFound},
		{"decide anonymously", `mutation { decideToolCall(approvalId: "chat-2-r1-t1", approve: true) { status } }`, nil, apperr.Unauthenticated},
		{"decide her own call", `mutation { decideToolCall(approvalId: "chat-2-r1-t1", approve: false, reason: "no") { status } }`, []client.Option{ana}, ""},
		{"admin decides anyone's", `mutation { decideToolCall(approvalId: "chat-bo-r1-t1", approve: true) { status } }`, []client.Option{admin}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, msg := errOf(t, c, tt.query, tt.caller...)
			if code != tt.code {
				t.Fatalf("code %q (%s); want %q", code, msg, tt.code)
			}
		})
	}
	if f.Cancelled == nil || len(f.Cancelled) != 1 || f.Cancelled[0] != "chat-bo" || f.Runs["chat-bo"].Status != contract.RunTerminated {
		t.Fatalf("cancelled %v; want only chat-bo, by the admin", f.Cancelled)
	}
	if len(f.Decided) != 2 || f.Decided[0].DecidedBy != "ana" || f.Decided[0].Reason != "no" || f.Decided[1].DecidedBy != "root" {
		t.Fatalf("decisions %+v; want ana's denial of her own call, then the admin's approval", f.Decided)
	}
	// Another user's turn and an unknown one look the same: null.
	for _, id := range []string{"chat-bo", "chat-unknown"} {
		var resp struct{ ChatRun *struct{ Status string } }
		if err := c.Post(`query($id: ID!) { chatRun(instanceId: $id) { status } }`, &resp, client.Var("id", id), ana); err != nil || resp.ChatRun != nil {
			t.Fatalf("chatRun(%s) as ana: %+v, %v; want null", id, resp.ChatRun, err)
		}
	}
}

// TestConversationUpdatedAuthorisation: conversationUpdated answers a
// session as the conversation query does (it once accepted another user's
// session and then delivered nothing, forever).
func TestConversationUpdatedAuthorisation(t *testing.T) {
	t.Parallel()
	r := resolver(graphtest.New())
	r.Callers = &auth.Guard{Mode: "jwt"}
	r.Conversations = fanout.New[*model.ConversationEvent](4, nil)
	anon := context.Background()
	ana := auth.WithIdentity(anon, auth.Identity{Subject: "ana"})
	admin := auth.WithIdentity(anon, auth.Identity{Subject: "root", Admin: true})
	tests := []struct {
		name          string
		ctx           context.Context
		session, user *string
		code          apperr.Code
	}{
		{"her own session", ana, ptr("s1"), nil, ""},
		{"her own user", ana, nil, ptr("ana"), ""},
		{"another user's session", ana, ptr("s-of-bo"), nil, apperr.Forbidden},
		{"an unknown session looks like another user's", ana, ptr("s-none"), nil, apperr.Forbidden},
		{"another user", ana, nil, ptr("bo"), apperr.Forbidden},
		{"another user's session as her own user", ana, ptr("s-of-bo"), ptr("ana"), apperr.Forbidden},
		{"an admin: any session", admin, ptr("s-of-bo"), nil, ""},
		{"anonymous", anon, ptr("s1"), nil, apperr.Unauthenticated},
		{"neither argument", ana, nil, nil, apperr.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(tt.ctx)
			defer cancel()
			_, err := r.Subscription().ConversationUpdated(ctx, tt.session, tt.user, nil)
			if apperr.CodeOf(err) != tt.code {
				t.Fatalf("code %q (%v); want %q", apperr.CodeOf(err), err, tt.code)
			}
		})
	}
}

// TestConversationPages: paging backwards with last and before, as an
// infinite scroll does, gives every message once, oldest first within a
// page, hasPrevious true until the first; cursors are stable when older
// messages have been dropped (numbers start above 1); a bad cursor is
// INVALID_ARGUMENT.
func TestConversationPages(t *testing.T) {
	t.Parallel()
	f := graphtest.New()
	var h []contract.Entry
	for i := range 7 {
		h = append(h, contract.Entry{Role: contract.RoleUser, Content: fmt.Sprint("m", i), Timestamp: graphtest.Time, Seq: 11 + i}) // 10 dropped
	}
	f.History["long"] = h
	f.Owners["long"] = "ana"
	c := execClient(resolver(f), graph.DefaultLoaderWait)
	type page struct {
		Conversation struct {
			Messages    []struct{ Content, Cursor string }
			HasPrevious bool
		}
	}
	var got []string
	var before *string
	var pages []bool
	for range 10 {
		var p page
		if err := c.Post(`query($b: String) { conversation(sessionId: "long", last: 3, before: $b) { messages { content cursor } hasPrevious } }`, &p, client.Var("b", before)); err != nil {
			t.Fatal(err)
		}
		var contents []string
		for _, m := range p.Conversation.Messages {
			contents = append(contents, m.Content)
		}
		got = append(contents, got...)
		pages = append(pages, p.Conversation.HasPrevious)
		if !p.Conversation.HasPrevious {
			break
		}
		before = &p.Conversation.Messages[0].Cursor
	}
	if strings.Join(got, ",") != "m0,m1,m2,m3,m4,m5,m6" || fmt.Sprint(pages) != "[true true false]" {
		t.Fatalf("pages gave %v (hasPrevious %v)", got, pages)
	}
	// The newest page again: the same cursors.
	var p1, p2 page
	c.MustPost(`{ conversation(sessionId: "long", last: 2) { messages { content cursor } hasPrevious } }`, &p1)
	c.MustPost(`{ conversation(sessionId: "long", last: 2) { messages { content cursor } hasPrevious } }`, &p2)
	if fmt.Sprint(p1) != fmt.Sprint(p2) || len(p1.Conversation.Messages) != 2 || p1.Conversation.Messages[1].Content != "m6" {
		t.Fatalf("newest page %+v / %+v", p1, p2)
	}
	if code, _ := errOf(t, c, `{ conversation(sessionId: "long", last: 2, before: "not-a-cursor") { hasPrevious } }`); code != apperr.Invalid {
		t.Fatalf("a bad cursor: %q", code)
	}
}

// TestConversationUpdatedResumes: with after, the events the client missed
// come first, in order, each once, from the memory's history and from the
// replica's recent events (one not yet in the history); then live events,
// without those replayed or older than the cursor. By user, the user's
// sessions are read; a session that is not the caller's replays nothing.
func TestConversationUpdatedResumes(t *testing.T) {
	t.Parallel()
	f := graphtest.New()
	t0 := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	var h []contract.Entry
	for i := 1; i <= 3; i++ {
		id := fmt.Sprint("e", i)
		h = append(h, contract.Entry{Role: contract.RoleUser, Content: "q" + id, EventID: id, EventAt: at(i)},
			contract.Entry{Role: contract.RoleAssistant, Content: "a" + id, EventID: id, EventAt: at(i)})
	}
	f.History["s-r"] = h
	f.Owners["s-r"] = "ana"
	f.SessionList["ana"] = append([]contract.SessionInfo{{SessionID: "s-r", UpdatedAt: at(3)}}, f.SessionList["ana"]...)
	r := resolver(f)
	b := fanout.New[*model.ConversationEvent](16, nil).KeepRecent(10)
	r.Conversations = b
	ev := func(i int) *model.ConversationEvent {
		id := fmt.Sprint("e", i)
		return &model.ConversationEvent{EventID: id, UserID: "ana", SessionID: "s-r", UserMessage: "q" + id, AssistantReply: "a" + id, Cursor: graph.EventCursor(at(i), id)}
	}
	b.Publish(ev(3)) // seen live by this replica and in the history
	b.Publish(ev(4)) // not in the history yet
	session, user := "s-r", "ana"
	tests := []struct {
		name          string
		session, user *string
		want          string
	}{
		{"by session", &session, nil, "e2 e3 e4 | e5"},
		{"by user", nil, &user, "e2 e3 e4 | e5"},
		{"another user's session", &session, ptr("bo"), " | "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			ch, err := r.Subscription().ConversationUpdated(ctx, tt.session, tt.user, ptr(graph.EventCursor(at(1), "e1")))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			take := func() {
				for {
					select {
					case e := <-ch:
						got = append(got, e.EventID)
					case <-time.After(100 * time.Millisecond):
						return
					}
				}
			}
			take()
			got = append(got, "|")
			b.Publish(ev(4)) // a repeat of a replayed one
			b.Publish(ev(0)) // older than the cursor
			b.Publish(ev(5))
			take()
			if s := strings.Join(got, " "); strings.TrimSpace(s) != strings.TrimSpace(tt.want) {
				t.Fatalf("got %q; want %q", s, tt.want)
			}
		})
		// ev(5) is recent now: later rows see it replayed; drop it again.
		b = fanout.New[*model.ConversationEvent](16, nil).KeepRecent(10)
		r.Conversations = b
		b.Publish(ev(3))
		b.Publish(ev(4))
	}
	if _, err := r.Subscription().ConversationUpdated(t.Context(), &session, nil, ptr("garbage")); apperr.CodeOf(err) != apperr.Invalid {
		t.Fatalf("a bad cursor: %v", err)
	}
}

func ptr(s string) *string { return &s }

// TestChatStreamEndsWithTheTurn: however many clients stream a running
// turn, one watcher reads it; when it fails, every stream ends with FAILED
// and the text so far; the watcher goes with the last subscriber.
func TestChatStreamEndsWithTheTurn(t *testing.T) {
	t.Parallel()
	f := graphtest.New()
	f.Runs["chat-r"] = &contract.ChatRun{InstanceID: "chat-r", Status: contract.RunRunning, UserID: "ana"}
	r := resolver(f)
	store := replies.New(8, nil)
	r.Replies = store
	ctx, cancel := context.WithCancel(t.Context())
	var streams []<-chan *model.ChatChunk
	for range 3 {
		ch, err := r.Subscription().ChatStream(ctx, "chat-r", nil)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, ch)
	}
	watchers := r.EndWatchers()
	if watchers != 1 {
		t.Fatalf("%d watchers for 3 streams of one turn; want 1", watchers)
	}
	testkit.WaitUntil(t, 5*time.Second, "the turn read by one poller", func() bool { return r.Runs.Polling() == 1 })
	store.Add(contract.ChatStreamed{InstanceID: "chat-r", Execution: 1, Seq: 1, Delta: "half", Text: "half"})
	f.Mu.Lock()
	f.Runs["chat-r"] = &contract.ChatRun{InstanceID: "chat-r", Status: contract.RunFailed, UserID: "ana"}
	f.Mu.Unlock()
	for i, ch := range streams {
		var last *model.ChatChunk
		for c := range ch {
			last = c
		}
		if last == nil || !last.Done || last.Status != model.ChatStatusFailed || last.Text != "half" {
			t.Fatalf("stream %d ended with %+v", i, last)
		}
	}
	cancel()
	testkit.WaitUntil(t, 5*time.Second, "the watcher gone with its subscribers", func() bool {
		return r.EndWatchers() == 0 && r.Runs.Polling() == 0
	})
}

// TestChatStreamGoesOnWhileTheTurnWaits: a turn that waits — queued behind
// another, or for a decision on a tool call — has not ended: its stream goes
// on and ends with the turn's end.
func TestChatStreamGoesOnWhileTheTurnWaits(t *testing.T) {
	t.Parallel()
	f := graphtest.New()
	f.Runs["chat-w"] = &contract.ChatRun{InstanceID: "chat-w", Status: contract.RunQueued, UserID: "ana"}
	r := resolver(f)
	store := replies.New(8, nil)
	r.Replies = store
	stream, err := r.Subscription().ChatStream(t.Context(), "chat-w", nil)
	if err != nil {
		t.Fatal(err)
	}
	runs, err := r.Subscription().ChatRun(t.Context(), "chat-w") // shares the stream's poller
	if err != nil {
		t.Fatal(err)
	}
	seen := func(st model.ChatStatus) {
		t.Helper()
		testkit.WaitUntil(t, 5*time.Second, "the turn read as "+string(st), func() bool {
			select {
			case run := <-runs:
				return run.Status == st
			default:
				return false
			}
		})
	}
	seen(model.ChatStatusQueued)
	for _, st := range []contract.RunStatus{contract.RunRunning, contract.RunAwaitingApproval} {
		f.Mu.Lock()
		f.Runs["chat-w"] = &contract.ChatRun{InstanceID: "chat-w", Status: st, UserID: "ana"}
		f.Mu.Unlock()
		seen(model.ChatStatus(st))
	}
	store.Add(contract.ChatStreamed{InstanceID: "chat-w", Execution: 1, Seq: 1, Delta: "done", Text: "done"})
	f.Mu.Lock()
	f.Runs["chat-w"] = &contract.ChatRun{InstanceID: "chat-w", Status: contract.RunCompleted, UserID: "ana", Reply: ptr("done")}
	f.Mu.Unlock()
	var got []string
	for c := range stream {
		got = append(got, fmt.Sprintf("%s:%v:%s", c.Status, c.Done, c.Text))
	}
	if s := strings.Join(got, " "); s != "RUNNING:false:done COMPLETED:true:done" {
		t.Fatalf("stream %s; want the piece, then the end COMPLETED", s)
	}
}
