// Package provider tests the services against an OpenAI-compatible provider
// (a local server in this test binary speaking the Chat Completions wire
// format, tool calls included) with a real API key in the Dapr secret store:
// the key reaches the provider and nothing else, and a chat turn survives a
// crash of the chat service in the middle of generate_response.
package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
	"github.com/daca-go/daca/internal/llm/llmtest"
)

// The key exists only in this test's secret store file.
const apiKey = "sk-daca-e2e-3f9c2a7b1d4e8f60a5c7"

var (
	listener *stacktest.Listener
	arrived  = make(chan string, 4) // the first request of each crash-test turn, held
	prov     = &llmtest.Provider{Key: apiKey, Answer: answer}

	respMu    sync.Mutex
	responses []string // every response body the tests saw, for the leak check
)

func TestMain(m *testing.M) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: prov, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	listener, err = stacktest.NewListener("provider-listener", "conversations", "memory-updates", "chat-stream")
	if err != nil {
		panic(err)
	}
	llmEnv := []string{"LLM_BASE_URL=http://" + ln.Addr().String() + "/v1", "LLM_MODEL=fake-model", "LLM_TIMEOUT=60s"}
	code := stacktest.Run(m, stacktest.Options{
		Apps: []stack.App{
			stack.Memory.App(llmEnv...),
			stack.Chat.App(llmEnv...),
			listener.App(),
		},
		Secrets: map[string]string{contract.SecretLLMKey: apiKey},
		Secure:  true, // APP_API_TOKEN: the apps answer only their sidecars
		// The scheduler lets at most this many generate_response activities
		// run at once (TestLLMCallsCapped).
		LLMMaxConcurrent: llmMaxConcurrent,
		AfterTests:       keyNeverLeaks,
	})
	listener.Close()
	srv.Close()
	os.Exit(code)
}

// answer is the provider's model: a summary when asked for one, and the
// first request that mentions "crash-test" held until its caller goes away
// (the chat service is killed meanwhile); otherwise llmtest.Default.
func answer(ctx context.Context, req llmtest.Request) (llmtest.Reply, bool) {
	last := req.Last()
	switch {
	case strings.Contains(req.System(), "maintain a short summary"):
		return llmtest.Reply{Content: "The user talks to the provider-backed agent."}, true
	case last.Role == "tool":
		return llmtest.Default(req), true
	case strings.HasPrefix(last.Content, "burst "):
		n := burst.inFlight.Add(1)
		defer burst.inFlight.Add(-1)
		for {
			m := burst.max.Load()
			if n <= m || burst.max.CompareAndSwap(m, n) {
				break
			}
		}
		select { // an LLM that takes a while to answer, so that calls would overlap
		case <-time.After(300 * time.Millisecond):
		case <-ctx.Done():
			return llmtest.Reply{}, false
		}
		return llmtest.Reply{Content: "done: " + last.Content}, true
	case strings.Contains(last.Content, "crash-test"):
		heldMu.Lock()
		first := !held[last.Content]
		held[last.Content] = true
		heldMu.Unlock()
		if first { // a few words streamed, then held until the chat service dies
			arrived <- last.Content
			return llmtest.Reply{Content: "these words are lost", Hold: true}, true
		}
		return llmtest.Reply{Content: "survived: " + last.Content}, true
	}
	return llmtest.Default(req), true
}

var (
	heldMu sync.Mutex
	held   = map[string]bool{}
	// burst counts the "burst" turns' LLM calls in flight, and the most at once.
	burst struct{ inFlight, max atomic.Int32 }
)

// llmMaxConcurrent is the stack's cap on concurrent generate_response activities.
const llmMaxConcurrent = 2

func do(t *testing.T, method, url string, body any, headers ...string) stacktest.Response {
	t.Helper()
	r := stacktest.Do(t, method, url, body, headers...)
	respMu.Lock()
	responses = append(responses, string(r.Body)+fmt.Sprint(r.Header))
	respMu.Unlock()
	return r
}

func chatURL(st *stack.Stack, path string) string {
	return st.App("chat-service").SidecarURL() + "/v1.0/invoke/chat-service/method/" + path
}

func memoryURL(st *stack.Stack, path string) string {
	return st.App("agent-memory-service").SidecarURL() + "/v1.0/invoke/agent-memory-service/method/" + path
}

func tok(st *stack.Stack) []string { return []string{"dapr-api-token", st.APIToken} }

func TestTurnThroughProvider(t *testing.T) {
	st := stacktest.Stack(t)
	session := fmt.Sprintf("prov-%d", time.Now().UnixNano())
	r := do(t, http.MethodPost, chatURL(st, "chat"), map[string]any{"user_id": "pat", "text": "What time is it?", "metadata": map[string]string{"session_id": session}}, tok(st)...)
	if r.Status != http.StatusOK {
		t.Fatalf("chat: %d %s", r.Status, r.Body)
	}
	if !regexp.MustCompile(`^It is \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC\.$`).MatchString(fmt.Sprint(r.JSON["reply"])) {
		t.Fatalf("reply %q: the tool call did not go round the provider", r.JSON["reply"])
	}
	if _, err := listener.Await(30*time.Second, 1, "memory-updates", session, "provider-backed agent"); err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"chat-service", "agent-memory-service"} {
		h := do(t, http.MethodGet, st.App(app).AppURL()+"/health", nil)
		if h.JSON["llm"] != "openai-compatible" {
			t.Fatalf("%s health = %s", app, h.Body)
		}
	}
}

func TestCrashDuringGenerateResponse(t *testing.T) {
	st := stacktest.Stack(t)
	session := fmt.Sprintf("crash-%d", time.Now().UnixNano())
	text := "crash-test " + session
	r := do(t, http.MethodPost, chatURL(st, "chat/async"), map[string]any{"user_id": "pat", "text": text, "metadata": map[string]string{"session_id": session}}, tok(st)...)
	if r.Status != http.StatusAccepted {
		t.Fatalf("async chat: %d %s", r.Status, r.Body)
	}
	id := r.JSON["instance_id"].(string)
	select {
	case <-arrived:
	case <-time.After(60 * time.Second):
		t.Fatal("generate_response never reached the provider")
	}
	// Kill the chat service while the workflow waits in generate_response,
	// once the words it had streamed are out.
	testkit.WaitFor(t, 30*time.Second, "the first execution's piece published", func() error {
		if len(listener.Matching("chat-stream", id)) == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	if err := st.Kill(contract.ChatApp); err != nil {
		t.Fatal(err)
	}
	if err := st.Restart(t.Context(), contract.ChatApp); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 3*time.Minute, "the interrupted turn to complete", func() error {
		r = do(t, http.MethodGet, chatURL(st, "chat/"+id), nil, tok(st)...)
		if r.JSON["status"] != "COMPLETED" {
			return fmt.Errorf("status %v", r.JSON["status"])
		}
		return nil
	})
	if r.JSON["reply"] != "survived: "+text {
		t.Fatalf("reply = %s", r.Body)
	}
	testkit.WaitFor(t, 60*time.Second, "history", func() error {
		h := do(t, http.MethodGet, memoryURL(st, "conversations/"+session), nil, tok(st)...)
		if n := len(h.JSON["history"].([]any)); n != 2 {
			return fmt.Errorf("%d entries", n)
		}
		return nil
	})
	if n := len(listener.Matching("conversations", session)); n != 1 {
		t.Fatalf("ConversationUpdated published %d times; want exactly once", n)
	}
	// The reply was streamed twice: the killed execution's words in the
	// first block of seq, the one after the restart in the next, ending
	// with the reply; what readers show never mixes the two.
	var first, second []contract.ChatStreamed
	for _, e := range listener.Matching("chat-stream", id) {
		var p contract.ChatStreamed
		if err := json.Unmarshal(e.Data, &p); err != nil || p.InstanceID != id || p.Validate() != nil {
			t.Fatalf("piece %s: %v", e.Data, err)
		}
		if p.Execution == 1 {
			first = append(first, p)
		} else {
			second = append(second, p)
		}
	}
	slices.SortFunc(second, func(a, b contract.ChatStreamed) int { return a.Seq - b.Seq })
	if len(first) == 0 || !strings.HasPrefix("these words are lost", first[0].Text) || len(second) == 0 ||
		second[0].Execution != 2 || second[0].Seq != contract.SeqBlock+1 || second[len(second)-1].Text != "survived: "+text {
		t.Fatalf("pieces: first execution %+v, after the restart %+v", first, second)
	}
}

// With APP_API_TOKEN set (daca up --secure), an app refuses calls that do
// not come from its sidecar; health probes stay open; calls through the
// sidecar work (every other test here goes that way).
func TestAppsAnswerOnlyTheirSidecar(t *testing.T) {
	st := stacktest.Stack(t)
	for app, route := range map[string]string{"chat-service": "/chat/chat-none", "agent-memory-service": "/memories/pat"} {
		direct := st.App(app).AppURL()
		if r := do(t, http.MethodGet, direct+route, nil); r.Status != http.StatusUnauthorized {
			t.Fatalf("%s answered a direct call: %d %s", app, r.Status, r.Body)
		}
		if r := do(t, http.MethodGet, direct+route, nil, "dapr-api-token", "wrong"); r.Status != http.StatusUnauthorized {
			t.Fatalf("%s accepted a wrong app token: %d", app, r.Status)
		}
		if r := do(t, http.MethodGet, direct+"/health", nil); r.Status != http.StatusOK {
			t.Fatalf("%s health probe: %d", app, r.Status)
		}
	}
	if r := do(t, http.MethodGet, memoryURL(st, "memories/pat"), nil, tok(st)...); r.Status != http.StatusOK {
		t.Fatalf("through the sidecar: %d %s", r.Status, r.Body)
	}
}

// keyNeverLeaks runs after every test of the package (stacktest's
// AfterTests, whatever their order): the key must appear in no response a
// test saw, no log line and no process environment of the run.
func keyNeverLeaks(st *stack.Stack) error {
	// A few more responses, errors included.
	ctx := context.Background()
	for _, r := range []struct {
		method, url string
		body        any
		headers     []string
	}{
		{http.MethodPost, chatURL(st, "chat"), map[string]any{"user_id": "pat", "text": ""}, tok(st)},
		{http.MethodGet, st.App(contract.ChatApp).SidecarURL() + "/v1.0/metadata", nil, tok(st)},
		{http.MethodGet, st.App(contract.ChatApp).SidecarURL() + "/v1.0/secrets/secretstore/" + contract.SecretLLMKey, nil, nil}, // no token: refused
	} {
		resp, err := stacktest.Call(ctx, r.method, r.url, r.body, r.headers...)
		if err != nil {
			return err
		}
		respMu.Lock()
		responses = append(responses, string(resp.Body)+fmt.Sprint(resp.Header))
		respMu.Unlock()
	}
	respMu.Lock()
	defer respMu.Unlock()
	for _, body := range responses {
		if strings.Contains(body, apiKey) {
			return fmt.Errorf("a response leaks the API key: %.200s", body)
		}
	}
	logs, _ := filepath.Glob(filepath.Join(filepath.Dir(st.App(contract.ChatApp).Daprd.Spec.LogFile), "*.log"))
	if len(logs) < 5 {
		return fmt.Errorf("only %d log files found", len(logs))
	}
	for _, f := range logs {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), apiKey) {
			return fmt.Errorf("%s leaks the API key", f)
		}
	}
	for _, p := range st.Processes() {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.Pid()))
		if err != nil {
			continue // exited (the killed chat service)
		}
		if strings.Contains(string(env), apiKey) {
			return fmt.Errorf("the environment of %s holds the API key", p.Spec.Name)
		}
	}
	if prov.Calls() == 0 {
		return errors.New("the provider was never called: the key check proves nothing")
	}
	return nil
}

// TestLLMCallsCapped: with the workflow configuration's
// activityConcurrencyLimits (LLM_MAX_CONCURRENT), the scheduler never lets
// more than that many generate_response activities call the provider at
// once, and every turn of a burst still completes.
func TestLLMCallsCapped(t *testing.T) {
	st := stacktest.Stack(t)
	const turns = 8
	ids := make([]string, turns)
	for i := range turns {
		r := do(t, http.MethodPost, chatURL(st, "chat/async"), map[string]any{"user_id": "burst-user", "text": fmt.Sprintf("burst %d", i)}, tok(st)...)
		id, _ := r.JSON["instance_id"].(string)
		if r.Status != http.StatusAccepted || id == "" {
			t.Fatalf("turn %d: %d %s", i, r.Status, r.Body)
		}
		ids[i] = id
	}
	for _, id := range ids {
		testkit.WaitFor(t, 2*time.Minute, "turn "+id+" to complete", func() error {
			r := stacktest.Do(t, http.MethodGet, chatURL(st, "chat/"+id), nil, tok(st)...)
			if r.JSON["status"] != "COMPLETED" {
				return fmt.Errorf("%v %v", r.JSON["status"], r.JSON["stage"])
			}
			return nil
		})
	}
	got := burst.max.Load()
	if got > llmMaxConcurrent || got < 1 {
		t.Fatalf("at most %d LLM calls at once; want 1 to %d", got, llmMaxConcurrent)
	}
	t.Logf("%d turns at once: at most %d LLM calls in flight (cap %d)", turns, got, llmMaxConcurrent)
}
