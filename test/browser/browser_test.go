// Package browser loads the GraphQL playground in headless Chromium (Debian's
// chromium package) against the real stack, runs a query from it and reads
// the result it shows.
package browser

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// trustedQuery is the one operation of the manifest of the gateway that
// runs only trusted documents ("gateway-trusted"), and trustedManifest
// that manifest (Apollo's persisted query manifest format).
const trustedQuery = `query TrustedMemory($u: ID!) { memory(userId: $u) { userId userSummary } }`

var trustedManifest = fmt.Sprintf(`{"format":"apollo-persisted-query-manifest","version":1,"operations":[{"id":%q,"name":"TrustedMemory","type":"query","body":%q}]}`,
	sha256hex(trustedQuery), trustedQuery)

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "daca-trusted-")
	if err != nil {
		panic(err)
	}
	manifest := filepath.Join(dir, "manifest.json")
	if err := os.WriteFile(manifest, []byte(trustedManifest), 0o644); err != nil {
		panic(err)
	}
	// Words 80 ms apart: the chat page's test sees a reply being written,
	// and its Stop lands while it is.
	code := stacktest.Run(m, stacktest.Options{Apps: []stack.App{
		stack.Memory.App(), stack.Tools.App(), stack.Chat.App("LLM_OFFLINE_TOKEN_DELAY=80ms"), stack.Gateway.App(),
		stack.Gateway.Named("gateway-trusted", "GRAPHQL_TRUSTED_DOCUMENTS=require", "GRAPHQL_TRUSTED_MANIFESTS="+manifest),
	}})
	os.RemoveAll(dir)
	os.Exit(code)
}

func chromium(t *testing.T) context.Context {
	t.Helper()
	bin, err := stack.EnsureDebianPackage(t.Context(), "chromium", "chromium", func(m string) { t.Log(m) })
	if err != nil {
		t.Fatalf("headless Chromium is needed: %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancelTimeout)
	return ctx
}

// pollPage waits (30 s at most) until js, run in the page, returns a
// string, and returns it; otherwise the test fails with the page's HTML.
func pollPage(t *testing.T, ctx context.Context, what, js string) string {
	t.Helper()
	got, err := chromedp.Run(ctx, chromedp.Poll[string](js, chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML("body"))
		t.Fatalf("%s: %v\npage: %.3000s", what, err, html)
	}
	return got
}

func TestPlaygroundRunsAQuery(t *testing.T) {
	st := stacktest.Stack(t)
	ctx := chromium(t)
	user := fmt.Sprintf("browser-%d", time.Now().UnixNano())
	query := fmt.Sprintf(`{ memory(userId: %q) { userId userSummary } health { llm } }`, user)
	page := st.App("gateway").AppURL() + "/?query=" + url.QueryEscape(query)

	if err := chromedp.Do(ctx,
		chromedp.Navigate(page),
		chromedp.WaitVisible(`.graphiql-execute-button`),
		chromedp.Click(`.graphiql-execute-button`),
	); err != nil {
		t.Fatal(err)
	}
	result := pollPage(t, ctx, "playground",
		`(() => { const r = document.querySelector('.graphiql-response'); return r && r.innerText.includes('userSummary') ? r.innerText : null })()`)
	for _, want := range []string{user + " is a new user.", `"llm": "offline"`} {
		if !strings.Contains(result, want) {
			t.Fatalf("result pane %q lacks %q", result, want)
		}
	}
}

func TestPlaygroundSubscriptionAndMutation(t *testing.T) {
	st := stacktest.Stack(t)
	ctx := chromium(t)
	session := fmt.Sprintf("browser-live-%d", time.Now().UnixNano())
	sub := fmt.Sprintf(`subscription { conversationUpdated(sessionId: %q) { sessionId userMessage assistantReply } }`, session)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(st.App("gateway").AppURL()+"/?query="+url.QueryEscape(sub)),
		chromedp.WaitVisible(`.graphiql-execute-button`),
		chromedp.Click(`.graphiql-execute-button`),
	); err != nil {
		t.Fatal(err)
	}
	// The subscription is open once the gateway counts it.
	testkit.WaitFor(t, 20*time.Second, "the browser's subscription", func() error {
		r := stacktest.Do(t, "GET", st.App("gateway").AppURL()+"/metrics", nil)
		if strings.Contains(string(r.Body), `daca_gateway_open_subscriptions{topic="conversations"} 1`) {
			return nil
		}
		return fmt.Errorf("not open yet")
	})
	// A mutation from a second tab of the same browser.
	tab, cancel := chromedp.NewContext(ctx)
	defer cancel()
	mut := fmt.Sprintf(`mutation { sendMessage(input: {userId: "browser", text: "hello from the browser", sessionId: %q}) { reply } }`, session)
	if err := chromedp.Do(tab,
		chromedp.Navigate(st.App("gateway").AppURL()+"/?query="+url.QueryEscape(mut)),
		chromedp.WaitVisible(`.graphiql-execute-button`),
		chromedp.Click(`.graphiql-execute-button`),
	); err != nil {
		t.Fatal(err)
	}
	const sent = `(() => { const r = document.querySelector('.graphiql-response'); return r && r.innerText.includes('hello from the browser') ? r.innerText : null })()`
	pollPage(t, tab, "mutation result", sent)
	// The first tab shows the event.
	got := pollPage(t, ctx, "subscription result", sent)
	if !strings.Contains(got, session) || !strings.Contains(got, "assistantReply") {
		t.Fatalf("subscription pane = %q", got)
	}
}

//go:embed testdata/clients/clients.js
var clientLibraries string

// clientsPage opens a page of the gateway's origin with the client
// libraries loaded (window.dacaClients).
func clientsPage(t *testing.T, st *stack.Stack) context.Context {
	t.Helper()
	ctx := chromium(t)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(st.App("gateway").AppURL()+"/"),
		chromedp.WaitReady("body"),
		chromedp.Evaluate[chromedp.Void](clientLibraries),
	); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// TestClientLibraries runs the libraries web clients use, in a page of the
// gateway's origin: Apollo Client's HttpLink (a query and a mutation) and
// GraphQLWsLink (graphql-ws), the legacy subscriptions-transport-ws client,
// and graphql-sse (Server-Sent Events); every subscription receives the
// turn's event.
func TestClientLibraries(t *testing.T) {
	st := stacktest.Stack(t)
	ctx := clientsPage(t, st)
	user, session := fmt.Sprintf("apollo-%d", time.Now().UnixNano()), fmt.Sprintf("apollo-live-%d", time.Now().UnixNano())
	type event struct{ EventID, SessionID, UserMessage, AssistantReply string }
	got, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
		Health struct{ Status, AuthMode string }
		Sent   struct{ Reply, SessionID, Status string }
		Modern event
		Legacy event
		SSE    event
	}](fmt.Sprintf(`window.dacaClients.run({user: %q, session: %q})`, user, session), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("client libraries: %v", err)
	}
	if got.Health.Status != "ok" || got.Health.AuthMode != "none" {
		t.Fatalf("Apollo query: health = %+v", got.Health)
	}
	if got.Sent.Status != "COMPLETED" || got.Sent.SessionID != session || !strings.Contains(got.Sent.Reply, "hello from Apollo") {
		t.Fatalf("Apollo mutation: %+v", got.Sent)
	}
	for name, ev := range map[string]event{"GraphQLWsLink (graphql-ws)": got.Modern, "subscriptions-transport-ws": got.Legacy, "graphql-sse": got.SSE} {
		if ev.SessionID != session || ev.UserMessage != "hello from Apollo" || ev.AssistantReply != got.Sent.Reply || ev.EventID == "" {
			t.Fatalf("%s got %+v", name, ev)
		}
	}
}

// TestApolloHTTPLinkAlone: Apollo Client with HttpLink only — no websocket
// link — receives a subscription over multipart HTTP (Apollo's protocol)
// and a query whose @defer fragment comes after the rest, each in the
// framing it asked for.
func TestApolloHTTPLinkAlone(t *testing.T) {
	st := stacktest.Stack(t)
	ctx := clientsPage(t, st)
	user, session := fmt.Sprintf("httplink-%d", time.Now().UnixNano()), fmt.Sprintf("httplink-s-%d", time.Now().UnixNano())
	got, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
		Sent     struct{ Reply, SessionID, Status string }
		Event    struct{ EventID, SessionID, UserMessage, AssistantReply string }
		Sessions []struct {
			SessionID string
			Messages  []struct{ Content string }
		}
		Seen []struct{ Accept, Type string }
	}](fmt.Sprintf(`window.dacaClients.httpOnly({user: %q, session: %q})`, user, session), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("HttpLink alone: %v", err)
	}
	if got.Sent.Status != "COMPLETED" || got.Event.SessionID != session || got.Event.UserMessage != "hello over multipart" || got.Event.AssistantReply != got.Sent.Reply {
		t.Fatalf("the subscription's event %+v after %+v", got.Event, got.Sent)
	}
	if len(got.Sessions) != 1 || got.Sessions[0].SessionID != session || len(got.Sessions[0].Messages) != 2 || got.Sessions[0].Messages[0].Content != "hello over multipart" {
		t.Fatalf("the deferred query: %+v", got.Sessions)
	}
	var subscription, deferred bool
	for _, r := range got.Seen {
		subscription = subscription || strings.Contains(r.Accept, "subscriptionSpec") && strings.Contains(r.Type, `subscriptionSpec="1.0"`)
		deferred = deferred || strings.Contains(r.Accept, "deferSpec") && strings.Contains(r.Type, "deferSpec=20220824")
	}
	if !subscription || !deferred {
		t.Fatalf("requests %+v; want a multipart subscription and a multipart @defer answer", got.Seen)
	}
}

// TestTrustedDocuments: on a gateway that runs only trusted documents
// (GRAPHQL_TRUSTED_DOCUMENTS=require, a manifest in Apollo's format), the
// page on / says the playground is disabled; Apollo Client's
// persisted-query link with ids from the manifest
// (@apollo/persisted-query-lists) sends the query by id alone and gets its
// answer; an operation not in the manifest, sent whole, is refused; and
// the chat page works (its own operations are trusted).
func TestTrustedDocuments(t *testing.T) {
	st := stacktest.Stack(t)
	ctx := chromium(t)
	gw := st.App("gateway-trusted").AppURL()
	if err := chromedp.Do(ctx, chromedp.Navigate(gw+"/")); err != nil {
		t.Fatal(err)
	}
	page, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil || !strings.Contains(page, "The GraphQL playground is disabled") {
		t.Fatalf("the page on /: %q %v", page, err)
	}
	// The clients, in a page of the gateway's origin without a content
	// security policy (the disabled playground's allows no connection).
	if err := chromedp.Do(ctx, chromedp.Navigate(gw+"/healthz"), chromedp.Evaluate[chromedp.Void](clientLibraries)); err != nil {
		t.Fatal(err)
	}
	user := fmt.Sprintf("trusted-%d", time.Now().UnixNano())
	got, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
		Memory   struct{ UserID, UserSummary string }
		SentText bool
		Requests int
		Refused  string
	}](fmt.Sprintf(`window.dacaClients.trusted({manifest: %s, user: %q})`, trustedManifest, user), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("trusted documents: %v", err)
	}
	if got.Memory.UserID != user || got.SentText || got.Requests != 1 {
		t.Fatalf("by id: %+v; want the answer to one request without the query's text", got)
	}
	if got.Refused != `["PERSISTED_QUERY_NOT_IN_LIST"]` {
		t.Fatalf("an operation not in the manifest: %s; want PERSISTED_QUERY_NOT_IN_LIST", got.Refused)
	}
	// The chat page: a message, its reply shown.
	session := fmt.Sprintf("trusted-s-%d", time.Now().UnixNano())
	if err := chromedp.Do(ctx,
		chromedp.Navigate(fmt.Sprintf("%s/chat?user=%s&session=%s", gw, user, session)),
		chromedp.WaitVisible("#text"),
		chromedp.SendKeys("#text", "hello from a trusted page"), chromedp.Click("#send"),
	); err != nil {
		t.Fatal(err)
	}
	pollPage(t, ctx, "the chat page's reply", `(() => {
		const b = [...document.querySelectorAll('.msg.assistant')].pop();
		return b && b.dataset.status === 'COMPLETED' && b.querySelector('.body').textContent.includes('hello from a trusted page') ? 'ok' : null })()`)
}

// TestPlaygroundDocsListTheSchema: GraphiQL's own introspection query (the
// standard one of graphql-js) is answered, so its documentation explorer
// lists the schema: Query and its field memory.
func TestPlaygroundDocsListTheSchema(t *testing.T) {
	st := stacktest.Stack(t)
	ctx := chromium(t)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(st.App("gateway").AppURL()+"/"),
		chromedp.WaitVisible(`.graphiql-execute-button`),
	); err != nil {
		t.Fatal(err)
	}
	// Open the documentation explorer, then the Query type, as a user clicks them.
	open := `(() => {
		const b = [...document.querySelectorAll('.graphiql-sidebar button')].find(b => (b.getAttribute('aria-label') || '').includes('Documentation'));
		if (!b) return null;
		const d = document.querySelector('.graphiql-doc-explorer');
		if (!d) { b.click(); return null; }
		const q = [...d.querySelectorAll('a')].find(a => a.innerText.trim() === 'Query');
		if (q) { q.click(); return null; }
		return d.innerText.includes('memory') ? d.innerText : null;
	})()`
	got := pollPage(t, ctx, "docs pane", open)
	for _, want := range []string{"memory", "sessions", "chatRun"} {
		if !strings.Contains(got, want) {
			t.Fatalf("docs pane %q lacks %q", got, want)
		}
	}
}

// TestApolloPersistedQueries: Apollo Client's own persisted-queries link
// (hashed queries over GET) against the gateway: the first client's hash is
// not known, so the link sends the query; a second client's hash alone is
// then answered.
func TestApolloPersistedQueries(t *testing.T) {
	st := stacktest.Stack(t)
	ctx := clientsPage(t, st)
	user := fmt.Sprintf("apq-%d", time.Now().UnixNano())
	type request struct {
		Method   string
		HashOnly bool
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
		First, Second struct{ UserID, UserSummary string }
		Requests      [][]request
	}](fmt.Sprintf(`window.dacaClients.persisted({user: %q})`, user), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("persisted queries: %v", err)
	}
	if got.First.UserID != user || got.Second.UserID != user {
		t.Fatalf("answers %+v %+v", got.First, got.Second)
	}
	want := [][]request{{{"GET", true}, {"POST", false}}, {{"GET", true}}}
	if fmt.Sprint(got.Requests) != fmt.Sprint(want) {
		t.Fatalf("requests %+v; want %+v (hash, then the query; then the hash alone)", got.Requests, want)
	}
}

// TestChatPage: the chat page at /chat, as a user drives it in the browser:
// earlier history comes in pages as the conversation is scrolled up, the
// user's sessions are listed beside it, a message's reply is shown as it is
// written (several chunks, the last text the reply), a tool call shows as it
// runs and with its result, Stop ends a reply being written with
// TERMINATED, and a returning user (no session in the address) picks a
// session from the list.
func TestChatPage(t *testing.T) {
	st := stacktest.Stack(t)
	gw := st.App("gateway").AppURL()
	user, session := fmt.Sprintf("page-%d", time.Now().UnixNano()), fmt.Sprintf("page-s-%d", time.Now().UnixNano())
	for i := range 5 {
		r := stacktest.Do(t, "POST", gw+"/graphql", map[string]any{
			"query":     `mutation($in: SendMessageInput!) { sendMessage(input: $in) { reply } }`,
			"variables": map[string]any{"in": map[string]any{"userId": user, "sessionId": session, "text": fmt.Sprint("earlier message ", i)}},
		})
		if !strings.Contains(string(r.Body), "earlier message") {
			t.Fatalf("turn %d: %s", i, r.Body)
		}
	}
	ctx := chromium(t)
	poll := func(what, js string) string { t.Helper(); return pollPage(t, ctx, what, js) }
	if err := chromedp.Do(ctx,
		chromedp.EmulateViewport(600, 400),
		chromedp.Navigate(fmt.Sprintf("%s/chat?user=%s&session=%s&page=3", gw, user, session)),
		chromedp.WaitVisible("#text"),
	); err != nil {
		t.Fatal(err)
	}
	// Scrolling up loads earlier pages until the first message.
	poll("history paged back to the first message", `(() => {
		const box = document.getElementById('messages');
		box.scrollTop = 0; box.dispatchEvent(new Event('scroll'));
		const msgs = box.querySelectorAll('.msg');
		return msgs.length === 10 && box.dataset.hasPrevious === 'false' && msgs[0].textContent === 'earlier message 0' ? 'ok' : null })()`)
	poll("the session in the list, current", fmt.Sprintf(`(() => { const b = document.querySelector('#session-list button[data-session=%q]');
		return b && b.classList.contains('current') && b.title.includes('10 messages') ? 'ok' : null })()`, session))

	// A reply streams.
	if err := chromedp.Do(ctx, chromedp.SendKeys("#text", "stream this reply please"), chromedp.Click("#send")); err != nil {
		t.Fatal(err)
	}
	got := poll("the streamed reply", `(() => {
		const b = [...document.querySelectorAll('.msg.assistant')].pop();
		return b && b.dataset.status === 'COMPLETED' ? b.dataset.chunks + '|' + b.querySelector('.body').textContent : null })()`)
	chunks, text, _ := strings.Cut(got, "|")
	if n, _ := strconv.Atoi(chunks); n < 3 || !strings.Contains(text, "stream this reply please") {
		t.Fatalf("reply %q in %s chunks; want it streamed in several", text, chunks)
	}
	testkit.WaitFor(t, 30*time.Second, "the reply the page showed in the history", func() error {
		d, errs := gqlQuery(t, gw, `query($s: ID!) { conversation(sessionId: $s, last: 1) { messages { content } } }`, map[string]any{"s": session})
		if errs != nil || !strings.Contains(fmt.Sprint(d), text) {
			return fmt.Errorf("the page showed %q; history has %v %v", text, d, errs)
		}
		return nil
	})

	// A tool call shows while it runs, then with its result.
	if err := chromedp.Do(ctx, chromedp.SendKeys("#text", "convert 5 km to mi"), chromedp.Click("#send")); err != nil {
		t.Fatal(err)
	}
	poll("the tool call and the reply", `(() => {
		const b = [...document.querySelectorAll('.msg.assistant')].pop();
		const tool = b && b.querySelector('.tool[data-tool="tools_convert_units"]');
		return b && b.dataset.status === 'COMPLETED' && tool && tool.dataset.status === 'COMPLETED' && tool.textContent.includes('3.106856 mi') &&
			b.querySelector('.body').textContent.includes('3.106856 mi') ? 'ok' : null })()`)

	// A call that changes something waits: Approve runs it, and the reply
	// has its result.
	if err := chromedp.Do(ctx, chromedp.SendKeys("#text", "remind me to water the plants"), chromedp.Click("#send")); err != nil {
		t.Fatal(err)
	}
	poll("the call waiting for approval", `(() => {
		const b = [...document.querySelectorAll('.msg.assistant')].pop();
		const tool = b && b.querySelector('.tool[data-tool="tools_create_note"][data-approval="PENDING"] button.approve');
		if (!tool) return null; tool.click(); return 'ok' })()`)
	poll("the approved call and the reply", `(() => {
		const b = [...document.querySelectorAll('.msg.assistant')].pop();
		const tool = b && b.querySelector('.tool[data-tool="tools_create_note"]');
		return b && b.dataset.status === 'COMPLETED' && tool && tool.dataset.approval === 'APPROVED' && tool.dataset.status === 'COMPLETED' &&
			b.querySelector('.body').textContent.includes('tools_create_note answered: noted') ? 'ok' : null })()`)

	// Stop a reply while it is written.
	if err := chromedp.Do(ctx, chromedp.SendKeys("#text", "a long reply to stop"), chromedp.Click("#send")); err != nil {
		t.Fatal(err)
	}
	poll("the turn started", `(() => { const b = [...document.querySelectorAll('.msg.assistant')].pop(); return b && b.dataset.instanceId && !document.getElementById('stop').hidden ? 'ok' : null })()`)
	if err := chromedp.Do(ctx, chromedp.Click("#stop")); err != nil {
		t.Fatal(err)
	}
	poll("the reply stopped", `(() => { const b = [...document.querySelectorAll('.msg.assistant')].pop();
		return b && b.dataset.status === 'TERMINATED' && b.textContent.includes('Stopped.') ? 'ok' : null })()`)

	// A returning user opens /chat with only their id: the sessions are
	// listed; picking one shows its conversation, with its tool calls.
	if err := chromedp.Do(ctx, chromedp.Navigate(fmt.Sprintf("%s/chat?user=%s", gw, user)), chromedp.WaitVisible("#new-chat")); err != nil {
		t.Fatal(err)
	}
	poll("the session listed for a returning user", fmt.Sprintf(`(() => { const b = document.querySelector('#session-list button[data-session=%q]');
		if (!b) return null; b.click(); return 'ok' })()`, session))
	poll("the picked session's conversation", `(() => {
		const tool = document.querySelector('#messages .tool[data-tool="tools_convert_units"]');
		return tool && tool.dataset.status === 'COMPLETED' && document.getElementById('session').value !== '' ? 'ok' : null })()`)
}

// gqlQuery posts a GraphQL query to the gateway.
func gqlQuery(t *testing.T, gw, query string, vars map[string]any) (map[string]any, []any) {
	t.Helper()
	r := stacktest.Do(t, "POST", gw+"/graphql", map[string]any{"query": query, "variables": vars})
	var out struct {
		Data   map[string]any
		Errors []any
	}
	if err := json.Unmarshal(r.Body, &out); err != nil {
		t.Fatalf("%v: %s", err, r.Body)
	}
	return out.Data, out.Errors
}

// TestAGUIClient runs AG-UI's own client (@ag-ui/client's HttpAgent, as
// CopilotKit uses it) against POST /agui on one thread: a reply streams, a
// tool call shows with its result, a call that changes something ends the
// run with an interrupt and the next run's resume approves it, and a run
// whose connection is cut after its first text goes on, when the agent
// runs again, from exactly where it was. The history holds each turn once.
func TestAGUIClient(t *testing.T) {
	st := stacktest.Stack(t)
	ctx := clientsPage(t, st)
	user, session := fmt.Sprintf("agui-%d", time.Now().UnixNano()), fmt.Sprintf("agui-s-%d", time.Now().UnixNano())
	type run struct {
		Types      []string
		ThreadID   string
		Outcome    *struct{ Type string }
		Tools      []string
		Results    []string
		Deltas     []string
		Reply      string
		ReplyID    string
		Interrupts []struct{ ID, Reason, ToolCallID string }
		Error      string
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
		Runs    []run
		Replies []string
		Roles   []string
	}](fmt.Sprintf(`window.dacaClients.agui({user: %q, session: %q})`, user, session), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("AG-UI client: %v", err)
	}
	if len(got.Runs) != 6 {
		t.Fatalf("runs: %+v", got.Runs)
	}
	ok := func(i int, r run) {
		t.Helper()
		if r.Error != "" || len(r.Types) < 2 || r.Types[0] != "RUN_STARTED" || r.Types[len(r.Types)-1] != "RUN_FINISHED" || r.Outcome == nil || r.ThreadID != session {
			t.Fatalf("run %d: %+v", i, r)
		}
	}
	streamed, tool, waiting, resumed, cut, again := got.Runs[0], got.Runs[1], got.Runs[2], got.Runs[3], got.Runs[4], got.Runs[5]
	ok(0, streamed)
	if streamed.Outcome.Type != "success" || len(streamed.Deltas) < 3 || !strings.Contains(streamed.Reply, "stream this reply please") {
		t.Fatalf("a streamed reply: %+v", streamed)
	}
	ok(1, tool)
	if len(tool.Tools) != 1 || tool.Tools[0] != "tools_convert_units" || len(tool.Results) != 1 || !strings.Contains(tool.Results[0], "3.106856 mi") || !strings.Contains(tool.Reply, "3.106856 mi") {
		t.Fatalf("a tool call: %+v", tool)
	}
	ok(2, waiting)
	if waiting.Outcome.Type != "interrupt" || len(waiting.Interrupts) != 1 || waiting.Interrupts[0].Reason != "tool_approval" ||
		len(waiting.Tools) != 1 || waiting.Tools[0] != "tools_create_note" || len(waiting.Results) != 0 {
		t.Fatalf("a call waiting for approval: %+v", waiting)
	}
	ok(3, resumed)
	if resumed.Outcome.Type != "success" || len(resumed.Interrupts) != 0 || len(resumed.Tools) != 0 ||
		len(resumed.Results) != 1 || !strings.Contains(resumed.Reply, "tools_create_note answered: noted") {
		t.Fatalf("the resumed run: %+v", resumed)
	}
	if cut.Reply == "" || cut.Outcome != nil || cut.Types[len(cut.Types)-1] != "TEXT_MESSAGE_CONTENT" {
		t.Fatalf("the cut run: %+v", cut)
	}
	ok(5, again)
	if again.ReplyID != cut.ReplyID || !strings.HasPrefix(again.Reply, cut.Reply) || len(again.Reply) <= len(cut.Reply) ||
		strings.Join(again.Deltas, "") != again.Reply[len(cut.Reply):] {
		t.Fatalf("the reconnect: %q after %q, its text %q", again.Reply, cut.Reply, again.Deltas)
	}
	// The thread as the agent has it: after a tool call the reply goes on in
	// a new message, after the call's result.
	if want := "user assistant user assistant tool assistant user assistant tool assistant user assistant"; strings.Join(got.Roles, " ") != want {
		t.Fatalf("the agent's messages: %v; want %s", got.Roles, want)
	}
	// The history: four turns, each once, each reply as the agent shows it.
	replies := got.Replies
	testkit.WaitFor(t, 30*time.Second, "the thread's turns in the history", func() error {
		d, errs := gqlQuery(t, st.App("gateway").AppURL(), `query($s: ID!) { conversation(sessionId: $s) { messages { role content } } }`, map[string]any{"s": session})
		if errs != nil {
			return fmt.Errorf("%v", errs)
		}
		var hist []string
		for _, m := range d["conversation"].(map[string]any)["messages"].([]any) {
			if m := m.(map[string]any); m["role"] == "ASSISTANT" {
				hist = append(hist, fmt.Sprint(m["content"]))
			}
		}
		if strings.Join(hist, "\n--\n") != strings.Join(replies, "\n--\n") {
			return fmt.Errorf("history's replies %q; the agent shows %q", hist, replies)
		}
		return nil
	})
}
