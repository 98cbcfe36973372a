package turn

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/testkit"
)

// TestStreamerCoalesces: pieces cut while the sender is busy (here: still
// counting the execution) go out together, up to and with the first tool
// call; every piece carries the text so far, a later execution numbers its
// pieces in its own block, and nothing is taken after close.
func TestStreamerCoalesces(t *testing.T) {
	tests := []struct {
		name      string
		execution int
		feed      []any                   // text (string) or a tool call (ToolCall)
		want      []contract.ChatStreamed // Seq, Delta, Text, ToolCall
	}{
		{"words coalesce", 1, []any{"a ", "b ", "c"},
			[]contract.ChatStreamed{{Seq: 1, Delta: "a b c", Text: "a b c"}}},
		{"a tool call ends a piece", 1, []any{"Let me see. ", "One", ToolCall{Name: "get_current_time", Arguments: "{}", Result: "now"}, "It is now."},
			[]contract.ChatStreamed{
				{Seq: 1, Delta: "Let me see. One", Text: "Let me see. One", ToolCall: &contract.ToolCall{Name: "get_current_time", Arguments: "{}", Result: "now", Status: contract.ToolCompleted}},
				{Seq: 2, Delta: "It is now.", Text: "Let me see. OneIt is now."}}},
		{"a second execution", 2, []any{"x"},
			[]contract.ChatStreamed{{Seq: contract.SeqBlock + 1, Delta: "x", Text: "x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &published{}
			release := make(chan struct{})
			s := newStreamer(t.Context(), pub, testkit.Quiet(), "chat-1", "ana", "", func(context.Context) (int, error) {
				<-release
				return tt.execution, nil
			})
			s.interval = time.Hour // nothing but the first piece, a tool call and close may cut
			for _, p := range tt.feed {
				if c, ok := p.(ToolCall); ok {
					s.tool(c)
				} else {
					s.text(p.(string))
				}
			}
			close(release)
			s.close()
			s.text("after close")
			s.wait()
			checkPieces(t, pub.streamed(), tt.want, tt.execution)
		})
	}
}

// TestStreamerFirstPieceAtOnce: the first piece and a tool call are
// published without waiting for more of the reply or for close.
func TestStreamerFirstPieceAtOnce(t *testing.T) {
	pub := &published{}
	s := newStreamer(t.Context(), pub, testkit.Quiet(), "chat-1", "ana", "", func(context.Context) (int, error) { return 1, nil })
	s.interval = time.Hour
	s.text("Let me see. ")
	testkit.WaitUntil(t, 2*time.Second, "the first piece published", func() bool { return len(pub.streamed()) == 1 })
	s.text("One")
	s.tool(ToolCall{Name: "get_current_time", Arguments: "{}", Result: "now"})
	testkit.WaitUntil(t, 2*time.Second, "the tool call published", func() bool { return len(pub.streamed()) == 2 })
	s.text("It is now.")
	s.close()
	s.wait()
	checkPieces(t, pub.streamed(), []contract.ChatStreamed{{Seq: 1, Delta: "Let me see. ", Text: "Let me see. "},
		{Seq: 2, Delta: "One", Text: "Let me see. One", ToolCall: &contract.ToolCall{Name: "get_current_time", Arguments: "{}", Result: "now", Status: contract.ToolCompleted}},
		{Seq: 3, Delta: "It is now.", Text: "Let me see. OneIt is now."}}, 1)
}

// TestStreamerCountFails: an execution that cannot be counted streams
// nothing, and close does not hang.
func TestStreamerCountFails(t *testing.T) {
	pub := &published{}
	s := newStreamer(t.Context(), pub, testkit.Quiet(), "chat-1", "ana", "", func(context.Context) (int, error) { return 0, errors.New("state store down") })
	s.text("a")
	s.close()
	s.wait()
	if p := pub.streamed(); len(p) != 0 {
		t.Fatalf("published %+v; want nothing", p)
	}
}

// TestNextExecution: the first execution of a turn counts with one write,
// the next ones read and write; a later round of the tool loop (first
// false) never tries the first write, which the state store would refuse;
// turns count apart.
func TestNextExecution(t *testing.T) {
	st := &state{}
	for i, c := range []struct {
		id    string
		first bool
		want  int
	}{{"chat-1", true, 1}, {"chat-1", true, 2}, {"chat-2", true, 1}, {"chat-1", false, 3}, {"chat-3", false, 1}} {
		before := st.refused
		n, err := nextExecution(t.Context(), st, c.id, c.first)
		if err != nil || n != c.want {
			t.Fatalf("call %d (%s): %d, %v; want %d", i, c.id, n, err, c.want)
		}
		if !c.first && st.refused != before {
			t.Fatalf("call %d (%s): a later round tried the first write", i, c.id)
		}
	}
}

func checkPieces(t *testing.T, got, want []contract.ChatStreamed, execution int) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("published %+v; want %+v", got, want)
	}
	for i, w := range want {
		g := got[i]
		if g.Seq != w.Seq || g.Delta != w.Delta || g.Text != w.Text || (g.ToolCall == nil) != (w.ToolCall == nil) ||
			(w.ToolCall != nil && *g.ToolCall != *w.ToolCall) || g.Execution != execution || g.InstanceID != "chat-1" || g.Validate() != nil {
			t.Fatalf("piece %d = %+v; want %+v", i, g, w)
		}
	}
}

// TestStreamerInterval: with the real interval, words written faster than
// it are published together, and a pause publishes what is pending without
// waiting for the next word.
func TestStreamerInterval(t *testing.T) {
	pub := &published{}
	s := newStreamer(t.Context(), pub, testkit.Quiet(), "chat-1", "ana", "", func(context.Context) (int, error) { return 1, nil })
	testkit.WaitUntil(t, 2*time.Second, "the execution counted", func() bool {
		select {
		case <-s.counted:
			return true
		default:
			return false
		}
	})
	s.text("w ")
	testkit.WaitUntil(t, 2*time.Second, "the first word published", func() bool { return len(pub.streamed()) == 1 })
	for range 19 {
		s.text("w ")
	}
	testkit.WaitUntil(t, 2*time.Second, "the pending words published after a pause", func() bool {
		p := pub.streamed()
		return len(p) == 2 && p[1].Text == "w w w w w w w w w w w w w w w w w w w w "
	})
	s.close()
	s.wait()
	if n := len(pub.streamed()); n != 2 {
		t.Fatalf("%d pieces after close; want 2", n)
	}
}
