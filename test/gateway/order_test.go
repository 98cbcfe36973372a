package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/stacktest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

const orderTurns = 20

// sent is what startChat answered one of the messages.
type sent struct {
	text, instance, status, code, message string
}

// onceOnRedis skips the order tests in the run on RabbitMQ: the order is
// the session actor's (the actor state store), whatever the broker; those
// tests take a minute.
func onceOnRedis(t *testing.T) {
	if b := stacktest.Broker(); b != stack.BrokerRedis {
		t.Skipf("the order does not depend on the broker: run on Redis only (this run: %s)", b)
	}
}

// sendAll sends n messages to one session at once, through both gateway
// replicas in turn, with the policy, without waiting for any turn.
func sendAll(t *testing.T, st *stack.Stack, user, session, policy string, n int) []sent {
	t.Helper()
	out := make([]sent, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			replica := []string{"gateway", "gateway-2"}[i%2]
			text := fmt.Sprintf("order message %d of %s", i+1, session)
			r, err := stacktest.Call(t.Context(), http.MethodPost, gqlURL(st, replica), map[string]any{
				"query":     `mutation($in: SendMessageInput!) { startChat(input: $in) { instanceId status } }`,
				"variables": map[string]any{"in": map[string]any{"userId": user, "sessionId": session, "text": text, "onBusy": policy}},
			})
			out[i].text = text
			if err != nil {
				out[i].code = err.Error()
				return
			}
			if errs, _ := r.JSON["errors"].([]any); len(errs) > 0 {
				out[i].code, out[i].message = code(errs), fmt.Sprint(errs)
				return
			}
			run := r.JSON["data"].(map[string]any)["startChat"].(map[string]any)
			out[i].instance, out[i].status = run["instanceId"].(string), run["status"].(string)
		})
	}
	wg.Wait()
	return out
}

// ended waits for the turn's end and returns its status.
func ended(t *testing.T, st *stack.Stack, instance string) string {
	t.Helper()
	var status string
	testkit.WaitFor(t, 3*time.Minute, "the end of "+instance, func() error {
		d, _, _ := gql(t, gqlURL(st, "gateway-2"), `query($id: ID!) { chatRun(instanceId: $id) { status } }`, map[string]any{"id": instance})
		run, _ := d["chatRun"].(map[string]any)
		status = fmt.Sprint(run["status"])
		switch status {
		case "COMPLETED", "FAILED", "TERMINATED":
			return nil
		}
		return fmt.Errorf("%s", status)
	})
	return status
}

// historyOf waits until the session's history has n messages and returns
// their contents, oldest first.
func historyOf(t *testing.T, st *stack.Stack, session string, n int) []string {
	t.Helper()
	var msgs []string
	testkit.WaitFor(t, 60*time.Second, fmt.Sprintf("%d messages in %s", n, session), func() error {
		d, _, _ := gql(t, gqlURL(st, "gateway"), `query($s: ID!) { conversation(sessionId: $s, last: 100) { messages { content } } }`, map[string]any{"s": session})
		list, _ := d["conversation"].(map[string]any)["messages"].([]any)
		msgs = msgs[:0]
		for _, m := range list {
			msgs = append(msgs, m.(map[string]any)["content"].(string))
		}
		if len(msgs) != n {
			return fmt.Errorf("%d messages", len(msgs))
		}
		return nil
	})
	return msgs
}

// checkSequential: the history alternates each turn's message and reply,
// and each reply's prompt held every earlier turn (the offline model says
// how many earlier messages it saw, up to the prompt's ten, and quotes the
// last of them: the turn before's reply).
func checkSequential(t *testing.T, msgs []string) {
	t.Helper()
	for k := 0; 2*k+1 < len(msgs); k++ {
		user, reply := msgs[2*k], msgs[2*k+1]
		if !strings.HasPrefix(user, "order message ") || !strings.Contains(reply, fmt.Sprintf("You said: %q", user)) {
			t.Fatalf("entry %d: %q then %q; want a message and its reply", 2*k, user, reply)
		}
		if k == 0 {
			if strings.Contains(reply, "earlier message") {
				t.Fatalf("the first turn's reply %q saw earlier messages", reply)
			}
			continue
		}
		saw := fmt.Sprintf("We have exchanged %d earlier message(s); the last one was: ", min(2*k, 10))
		prev := `You said: \"` + msgs[2*k-2] + `\"` // quoted inside the quote of the turn before's reply
		if !strings.Contains(reply, saw) || !strings.Contains(reply, prev) {
			t.Fatalf("turn %d's reply %q; want its prompt to hold the turns before it (%s, ending with the reply to %q)", k+1, reply, saw, msgs[2*k-2])
		}
	}
}

// TestSessionOrderEnqueue: twenty messages sent at once to one session
// through two gateways all run, one at a time: those that found the
// session busy were QUEUED, the history is in the order they were
// accepted, and each turn's prompt held every turn before it.
func TestSessionOrderEnqueue(t *testing.T) {
	onceOnRedis(t)
	st := stacktest.Stack(t)
	user, session := unique("orderly"), unique("order-s")
	got := sendAll(t, st, user, session, "ENQUEUE", orderTurns)
	queued := 0
	for _, s := range got {
		if s.code != "" {
			t.Fatalf("%q refused: %s %s", s.text, s.code, s.message)
		}
		if s.status == "QUEUED" {
			queued++
		}
	}
	if queued == 0 {
		t.Fatalf("no message found the session busy: %+v", got)
	}
	for _, s := range got {
		if status := ended(t, st, s.instance); status != "COMPLETED" {
			t.Fatalf("%s ended %s", s.instance, status)
		}
	}
	checkSequential(t, historyOf(t, st, session, 2*orderTurns))
}

// TestSessionOrderReject: with REJECT, a message that finds the session
// busy is refused with CONFLICT naming the running turn; those accepted
// ran one at a time.
func TestSessionOrderReject(t *testing.T) {
	onceOnRedis(t)
	st := stacktest.Stack(t)
	user, session := unique("rejecter"), unique("reject-s")
	got := sendAll(t, st, user, session, "REJECT", orderTurns)
	accepted := map[string]bool{}
	for _, s := range got {
		if s.code == "" {
			accepted[s.instance] = true
			if s.status == "QUEUED" {
				t.Fatalf("%q queued with REJECT", s.text)
			}
		}
	}
	conflicts := 0
	for _, s := range got {
		if s.code == "" {
			continue
		}
		conflicts++
		if s.code != "CONFLICT" || !strings.Contains(s.message, "busy with chat turn chat-") {
			t.Fatalf("%q: %s %s; want CONFLICT naming the running turn", s.text, s.code, s.message)
		}
		named := false
		for id := range accepted {
			named = named || strings.Contains(s.message, id)
		}
		if !named {
			t.Fatalf("%q: the conflict names no accepted turn: %s", s.text, s.message)
		}
	}
	if len(accepted) == 0 || conflicts == 0 {
		t.Fatalf("%d accepted, %d conflicts; want both", len(accepted), conflicts)
	}
	for id := range accepted {
		if status := ended(t, st, id); status != "COMPLETED" {
			t.Fatalf("%s ended %s", id, status)
		}
	}
	checkSequential(t, historyOf(t, st, session, 2*len(accepted)))
}

// TestSessionOrderInterrupt: with INTERRUPT each message stops the turn
// that runs; the interrupted turns end TERMINATED and are not in the
// history; the others complete, one at a time.
func TestSessionOrderInterrupt(t *testing.T) {
	onceOnRedis(t)
	st := stacktest.Stack(t)
	user, session := unique("interrupter"), unique("interrupt-s")
	got := sendAll(t, st, user, session, "INTERRUPT", orderTurns)
	var completed, terminated []string
	text := map[string]string{}
	for _, s := range got {
		if s.code != "" {
			t.Fatalf("%q refused: %s %s", s.text, s.code, s.message)
		}
		text[s.instance] = s.text
		switch status := ended(t, st, s.instance); status {
		case "COMPLETED":
			completed = append(completed, s.instance)
		case "TERMINATED":
			terminated = append(terminated, s.instance)
		default:
			t.Fatalf("%s ended %s", s.instance, status)
		}
	}
	if len(terminated) == 0 || len(completed) == 0 {
		t.Fatalf("%d completed, %d terminated; want some of each", len(completed), len(terminated))
	}
	msgs := historyOf(t, st, session, 2*len(completed))
	all := strings.Join(msgs, "\n")
	for _, id := range terminated {
		if strings.Contains(all, fmt.Sprintf("%q", text[id])) || strings.Contains(all, text[id]+"\n") || strings.HasSuffix(all, text[id]) {
			t.Fatalf("the interrupted turn %s (%q) is in the history", id, text[id])
		}
	}
	checkSequential(t, msgs)
}

// TestDoneAgreesWithChatRun: once a chatStream client has the last chunk
// (done, COMPLETED), chatRun of the turn answers COMPLETED with the same
// reply on every replica — at once, while the workflow may still be
// finishing.
func TestDoneAgreesWithChatRun(t *testing.T) {
	st := stacktest.Stack(t)
	for i := range 3 {
		id, _ := startTurn(t, st, unique("agree"), fmt.Sprintf("agree %d", i))
		ws := subscribed(t, st, "gateway-2", "c", chatStream, map[string]any{"id": id})
		end := follow(t, ws, "c").last()
		ws.Close()
		if end["status"] != "COMPLETED" {
			t.Fatalf("the stream ended %v", end)
		}
		for _, replica := range []string{"gateway-2", "gateway"} {
			d, errs, _ := gql(t, gqlURL(st, replica), `query($id: ID!) { chatRun(instanceId: $id) { status reply } }`, map[string]any{"id": id})
			run, _ := d["chatRun"].(map[string]any)
			if errs != nil || run["status"] != "COMPLETED" || run["reply"] != end["text"] {
				t.Fatalf("chatRun on %s right after done: %v %v; want COMPLETED with %q", replica, run, errs, end["text"])
			}
		}
	}
}
