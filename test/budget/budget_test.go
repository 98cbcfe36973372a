// Package budget tests the daily token budget per user end to end on the
// real stack: turns through two gateway replicas until the user's tokens
// reach TOKEN_BUDGET_PER_DAY, the next turn refused with
// RESOURCE_EXHAUSTED and the time the budget resets, and the usage the
// memory counted equal to what the LLM calls reported (the apps' own
// token counters).
package budget

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

const budget = 2000

func TestMain(m *testing.M) {
	os.Exit(stacktest.Run(m, stacktest.Options{Apps: []stack.App{
		// The summary at every turn (no job): each turn's whole usage is
		// counted when its event is applied.
		stack.Memory.App("SUMMARY_DEBOUNCE=0"),
		stack.Tools.App(),
		stack.Chat.App("LLM_OFFLINE_TOKEN_DELAY=0", "TOKEN_BUDGET_PER_DAY="+strconv.Itoa(budget)),
		stack.Gateway.App(),
		stack.Gateway.Named("gateway-2"),
	}}))
}

func gql(t *testing.T, st *stack.Stack, gateway, query string, vars map[string]any) (map[string]any, map[string]any) {
	t.Helper()
	resp, err := stacktest.Call(t.Context(), http.MethodPost, st.App(gateway).AppURL()+"/graphql", map[string]any{"query": query, "variables": vars})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := resp.JSON["data"].(map[string]any)
	errs, _ := resp.JSON["errors"].([]any)
	if len(errs) == 0 {
		return data, nil
	}
	e, _ := errs[0].(map[string]any)
	return data, e
}

var llmMetric = regexp.MustCompile(`(?m)^daca_llm_(call_duration_seconds_count|tokens_total)\{[^}]*\} ([0-9.e+]+)$`)

// reported adds up the LLM calls and tokens chat-service and the memory
// report on /metrics.
func reported(t *testing.T, st *stack.Stack) (calls, tokens int) {
	for _, id := range []string{contract.ChatApp, contract.MemoryApp} {
		resp, err := http.Get(st.App(id).AppURL() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, m := range llmMetric.FindAllStringSubmatch(string(b), -1) {
			n, _ := strconv.ParseFloat(m[2], 64)
			if m[1] == "tokens_total" {
				tokens += int(n)
			} else {
				calls += int(n)
			}
		}
	}
	return calls, tokens
}

// TestBudgetAcrossGateways: a user's turns, through one gateway and the
// other in turn, until the day's tokens reach the budget; the next turn,
// on either gateway and on chat-service itself, is refused with
// RESOURCE_EXHAUSTED and the time it resets (the next midnight UTC); the
// usage query counts exactly what the LLM calls reported.
func TestBudgetAcrossGateways(t *testing.T) {
	st := stacktest.Stack(t)
	user, session := fmt.Sprintf("budget-%d", time.Now().UnixNano()), fmt.Sprintf("budget-s-%d", time.Now().UnixNano())
	calls0, tokens0 := reported(t, st)
	gateways := []string{"gateway", "gateway-2"}
	usage := func(gateway string) map[string]any {
		d, e := gql(t, st, gateway, `query($u: ID!) { usage(userId: $u) { userId since tokensIn tokensOut llmCalls turns toolCalls } }`, map[string]any{"u": user})
		if e != nil {
			t.Fatalf("usage: %v", e)
		}
		return d["usage"].(map[string]any)
	}
	tokens := func(u map[string]any) int { return int(u["tokensIn"].(float64) + u["tokensOut"].(float64)) }
	sent := 0
	for ; sent < 50; sent++ {
		gw := gateways[sent%2]
		before := usage(gateways[(sent+1)%2])
		if tokens(before) >= budget {
			break
		}
		_, e := gql(t, st, gw, `mutation($in: SendMessageInput!) { sendMessage(input: $in) { status } }`,
			map[string]any{"in": map[string]any{"userId": user, "sessionId": session, "text": fmt.Sprintf("message %d, a few words long", sent+1)}})
		if e != nil {
			t.Fatalf("turn %d under the budget (%d tokens used): %v", sent+1, tokens(before), e)
		}
		// Counted once its event is applied (on the memory's schedule).
		testkit.WaitFor(t, 30*time.Second, "the turn counted", func() error {
			if u := usage(gw); u["turns"].(float64) != float64(sent+1) {
				return fmt.Errorf("%v", u)
			}
			return nil
		})
	}
	if sent < 2 {
		t.Fatalf("the budget was reached after %d turns; want a few (raise it)", sent)
	}
	reset := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour).Format(time.RFC3339)
	for _, gw := range gateways {
		_, e := gql(t, st, gw, `mutation($in: SendMessageInput!) { sendMessage(input: $in) { status } }`,
			map[string]any{"in": map[string]any{"userId": user, "sessionId": session, "text": "one more"}})
		ext, _ := e["extensions"].(map[string]any)
		if ext["code"] != "RESOURCE_EXHAUSTED" || ext["resetsAt"] != reset || ext["retryAfter"] == nil {
			t.Fatalf("%s: a turn over the budget: %v; want RESOURCE_EXHAUSTED, resetsAt %s", gw, e, reset)
		}
	}
	// The tutorial's way in, straight to chat-service: refused the same way.
	resp, err := stacktest.Call(t.Context(), http.MethodPost, st.App(contract.ChatApp).SidecarURL()+"/v1.0/invoke/chat-service/method/chat",
		map[string]any{"user_id": user, "text": "one more", "metadata": map[string]string{"session_id": session}}, "dapr-api-token", st.APIToken)
	if err != nil || resp.Status != http.StatusTooManyRequests || resp.JSON["code"] != "resource_exhausted" {
		t.Fatalf("POST /chat over the budget: %d %v (%v); want 429 resource_exhausted", resp.Status, resp.JSON, err)
	}
	// Counted exactly: what every LLM call reported, the turns' and the
	// summaries' (this stack served this user alone).
	u := usage("gateway")
	calls, toks := reported(t, st)
	if tokens(u) != toks-tokens0 || int(u["llmCalls"].(float64)) != calls-calls0 || u["turns"].(float64) != float64(sent) {
		t.Fatalf("usage %v; want %d tokens and %d LLM calls (the apps' counters), %d turns", u, toks-tokens0, calls-calls0, sent)
	}
	if tokens(u) < budget {
		t.Fatalf("refused at %d tokens; the budget is %d", tokens(u), budget)
	}
}
