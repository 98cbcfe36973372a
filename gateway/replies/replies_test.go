package replies

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// piece is chat-service's piece seq of execution exec, whose text so far is
// the words w1 … w<n> (n = seq within the block).
func piece(exec, n int) contract.ChatStreamed {
	var words []string
	for i := 1; i <= n; i++ {
		words = append(words, fmt.Sprintf("w%d ", i))
	}
	return contract.ChatStreamed{InstanceID: "chat-1", Execution: exec, Seq: (exec-1)*contract.SeqBlock + n,
		Delta: words[n-1], Text: strings.Join(words, "")}
}

type got struct {
	seq       int
	delta     string
	done      bool
	restarted bool
}

func drain(ch <-chan *model.ChatChunk) []got {
	var out []got
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				return out
			}
			out = append(out, got{c.Seq, c.Delta, c.Done, c.Restarted})
		default:
			return out
		}
	}
}

// TestOrderAndReplay: pieces in any order and twice come out once, in order
// of seq; a subscriber joining late gets what was written so far; one that
// resumes gets only what follows; the end carries what the pieces did not.
func TestOrderAndReplay(t *testing.T) {
	t.Parallel()
	b := 1<<20 + 1 // the first seq of execution 2
	tests := []struct {
		name   string
		after  int // the subscriber's after; it joins before the pieces unless late
		late   bool
		pieces []contract.ChatStreamed
		finish string // the reply the turn completed with; "" none
		want   []got
	}{
		{"in order", 0, false, []contract.ChatStreamed{piece(1, 1), piece(1, 2)}, "",
			[]got{{1, "w1 ", false, false}, {2, "w2 ", false, false}}},
		{"reordered and repeated", 0, false, []contract.ChatStreamed{piece(1, 1), piece(1, 3), piece(1, 2), piece(1, 2), piece(1, 1)}, "",
			[]got{{1, "w1 ", false, false}, {2, "w2 ", false, false}, {3, "w3 ", false, false}}},
		{"late: the text so far first", 0, true, []contract.ChatStreamed{piece(1, 1), piece(1, 2)}, "",
			[]got{{1, "w1 ", false, false}, {2, "w2 ", false, false}}},
		{"resume after 1", 1, true, []contract.ChatStreamed{piece(1, 1), piece(1, 2), piece(1, 3)}, "",
			[]got{{2, "w2 ", false, false}, {3, "w3 ", false, false}}},
		{"the end adds what is missing", 0, false, []contract.ChatStreamed{piece(1, 1)}, "w1 w2 end",
			[]got{{1, "w1 ", false, false}, {2, "w2 end", true, false}}},
		{"a retry starts over", 0, false, []contract.ChatStreamed{piece(1, 1), piece(1, 2), piece(2, 1), piece(1, 3)}, "w1 ",
			[]got{{1, "w1 ", false, false}, {2, "w2 ", false, false}, {b, "w1 ", false, true}, {b + 1, "", true, false}}},
		{"resume from an earlier execution", 2, true, []contract.ChatStreamed{piece(1, 1), piece(1, 2), piece(2, 1)}, "",
			[]got{{b, "w1 ", false, true}}},
		{"late joiner of a replica that missed the start", 0, false, []contract.ChatStreamed{piece(1, 3), piece(1, 4)}, "",
			[]got{{3, "w1 w2 w3 ", false, false}, {4, "w4 ", false, false}}},
		{"resume after the end", 3, true, []contract.ChatStreamed{piece(1, 1), piece(1, 2)}, "w1 w2 ",
			[]got{{3, "", true, false}}},
		{"after ahead of this replica: only what follows it, and the end", 3, false, []contract.ChatStreamed{piece(1, 1), piece(1, 2), piece(1, 3), piece(1, 4)}, "w1 w2 w3 w4 ",
			[]got{{4, "w4 ", false, false}, {5, "", true, false}}},
		{"the end numbered below after", 9, false, []contract.ChatStreamed{piece(1, 1)}, "w1 ",
			[]got{{2, "", true, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(16, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var ch <-chan *model.ChatChunk
			if !tt.late {
				ch = s.Subscribe(ctx, "chat-1", tt.after)
			}
			for _, p := range tt.pieces {
				s.Add(p)
			}
			if tt.finish != "" {
				s.Finish("chat-1", model.ChatStatusCompleted, tt.finish, true)
			}
			if tt.late {
				ch = s.Subscribe(ctx, "chat-1", tt.after)
			}
			g := drain(ch)
			if fmt.Sprint(g) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v\nwant %v", g, tt.want)
			}
		})
	}
}

// TestGapSkipped: a piece that never comes holds the others back only until
// maxPending later ones have arrived; the text stays whole.
func TestGapSkipped(t *testing.T) {
	t.Parallel()
	s := New(64, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := s.Subscribe(ctx, "chat-1", 0)
	s.Add(piece(1, 1))
	for n := 3; n < 3+maxPending; n++ { // 2 is lost
		s.Add(piece(1, n))
	}
	g := drain(ch)
	if len(g) != maxPending+1 || g[1].seq != 3 || g[1].delta != "w2 w3 " {
		t.Fatalf("got %v", g)
	}
}

// TestSlowSubscriberDropped: a subscriber that does not read is dropped and
// told (onDrop), the others go on; an ended context frees its subscriber.
func TestSlowSubscriberDropped(t *testing.T) {
	t.Parallel()
	var dropped []context.Context
	s := New(2, func(ctx context.Context) { dropped = append(dropped, ctx) })
	slowCtx, cancelSlow := context.WithCancel(context.Background())
	defer cancelSlow()
	fastCtx, cancelFast := context.WithCancel(context.Background())
	slow := s.Subscribe(slowCtx, "chat-1", 0)
	fast := s.Subscribe(fastCtx, "chat-1", 0)
	for n := 1; n <= 5; n++ {
		s.Add(piece(1, n))
		drain(fast)
	}
	if len(dropped) != 1 || dropped[0] != slowCtx {
		t.Fatalf("dropped %d subscribers", len(dropped))
	}
	if n := len(drain(slow)); n != 2 {
		t.Fatalf("the slow subscriber got %d chunks before its channel closed; want its 2 buffered", n)
	}
	if _, subs := s.Len(); subs != 1 {
		t.Fatalf("%d subscribers; want 1", subs)
	}
	cancelFast()
	testkit.WaitUntil(t, 5*time.Second, "the ended subscriber freed", func() bool { _, subs := s.Len(); return subs == 0 })
	if _, open := <-fast; open {
		for range fast {
		}
	}
}

// TestForgetting: a finished turn is forgotten after Keep, an idle one
// after Idle, and never more than Max turns are kept.
func TestForgetting(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	s := New(4, nil)
	s.now = func() time.Time { return now }
	s.Max = 3
	s.Add(piece(1, 1))
	s.Finish("chat-1", model.ChatStatusCompleted, "w1 ", true)
	s.Add(contract.ChatStreamed{InstanceID: "chat-2", Execution: 1, Seq: 1, Delta: "x", Text: "x"})
	now = now.Add(DefaultKeep + time.Second)
	s.Sweep()
	if n, _ := s.Len(); n != 1 {
		t.Fatalf("%d turns after Keep; want 1 (the running one)", n)
	}
	now = now.Add(DefaultIdle)
	s.Sweep()
	if n, _ := s.Len(); n != 0 {
		t.Fatalf("%d turns after Idle; want 0", n)
	}
	for i := range 5 {
		s.Add(contract.ChatStreamed{InstanceID: fmt.Sprintf("chat-%d", i), Execution: 1, Seq: 1, Delta: "x", Text: "x"})
	}
	if n, _ := s.Len(); n != 3 {
		t.Fatalf("%d turns; want at most Max=3", n)
	}
	// Finish of an unknown turn with known=true keeps nothing.
	s.Finish("chat-unknown", model.ChatStatusCompleted, "x", true)
	if n, _ := s.Len(); n != 3 {
		t.Fatalf("%d turns after finishing an unknown one", n)
	}
}

// TestRunStops: Run ends with its context.
func TestRunStops(t *testing.T) {
	t.Parallel()
	s := New(1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx, time.Millisecond); close(done) }()
	cancel()
	<-done
}

// TestToolsFillWhatThePiecesMissed: the final state of a tool call whose
// piece never came (best effort) reaches subscribers from the turn's
// event, once, before the end; one the pieces showed is not repeated.
func TestToolsFillWhatThePiecesMissed(t *testing.T) {
	t.Parallel()
	s := New(8, nil)
	ch := s.Subscribe(t.Context(), "chat-t", 0)
	running := contract.ToolCall{ID: "c1", Name: "tools_convert_units", Server: "tools", Arguments: "{}", Status: contract.ToolRunning}
	s.Add(contract.ChatStreamed{InstanceID: "chat-t", Execution: 1, Seq: 1, ToolCall: &running})
	done := contract.ToolCall{ID: "c2", Name: "get_current_time", Arguments: "{}", Result: "now", Status: contract.ToolCompleted}
	s.Add(contract.ChatStreamed{InstanceID: "chat-t", Execution: 1, Seq: 2, ToolCall: &done})
	completed := running
	completed.Result, completed.Status = "5 km = 3.1 mi", contract.ToolCompleted
	s.Tools("chat-t", []contract.ToolCall{completed, done})
	s.Finish("chat-t", model.ChatStatusCompleted, "the reply", true)
	var got []string
	for c := range ch {
		if c.ToolCall != nil {
			got = append(got, *c.ToolCall.ID+"="+string(c.ToolCall.Status))
		}
	}
	if strings.Join(got, ",") != "c1=RUNNING,c2=COMPLETED,c1=COMPLETED" {
		t.Fatalf("tool chunks %v", got)
	}
}

// TestApprovalChunks: each change of a waiting call's request comes as a
// chunk with the call and the request (a denial with its outcome as the
// result), numbered after the pieces; a turn nobody streams is left alone.
func TestApprovalChunks(t *testing.T) {
	t.Parallel()
	s := New(8, nil)
	ch := s.Subscribe(t.Context(), "chat-a", 0)
	s.Add(contract.ChatStreamed{InstanceID: "chat-a", Execution: 1, Seq: 1, Delta: "Let me ", Text: "Let me "})
	a := contract.Approval{ID: "chat-a-r1-t1", InstanceID: "chat-a", CallID: "c1", Name: "tools_delete_note", Server: "tools", Tool: "delete_note",
		Arguments: `{"id":"n1"}`, Status: contract.ApprovalPending}
	s.Approval("chat-a", a)
	a.Status, a.Reason = contract.ApprovalDenied, "no"
	s.Approval("chat-a", a)
	s.Approval("chat-unknown", a)
	s.Finish("chat-a", model.ChatStatusCompleted, "Let me not.", true)
	var got []string
	for c := range ch {
		if tc := c.ToolCall; tc != nil {
			got = append(got, fmt.Sprintf("%d:%s=%s/%s/%s", c.Seq, *tc.ID, tc.Status, tc.Approval.Status, deref(tc.Result)))
		}
	}
	if strings.Join(got, ",") != "2:c1=RUNNING/PENDING/,3:c1=FAILED/DENIED/denied by the user: no" {
		t.Fatalf("approval chunks %v", got)
	}
	if n, _ := s.Len(); n != 1 {
		t.Fatalf("%d turns kept; an approval of a turn nobody streams added one", n)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
