package turn

import (
	"testing"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/testkit"
	"github.com/daca-go/daca/internal/llm"
)

// TestStreamerCoalesces: the first piece goes out at once, the words that
// follow within the interval go out together, a tool call goes out at once
// with what preceded it, and close sends the rest; every piece carries the
// text so far, and a later execution numbers its pieces in its own block.
func TestStreamerCoalesces(t *testing.T) {
	tests := []struct {
		name      string
		execution int
		feed      []llm.Piece
		want      []contract.ChatStreamed // Seq, Delta, Text, ToolCall
	}{
		{"words coalesce", 1, []llm.Piece{{Delta: "a "}, {Delta: "b "}, {Delta: "c"}},
			[]contract.ChatStreamed{{Seq: 1, Delta: "a ", Text: "a "}, {Seq: 2, Delta: "b c", Text: "a b c"}}},
		{"a tool call at once", 1, []llm.Piece{{Delta: "Let me see. "}, {Delta: "One"}, {Tool: &llm.ToolUse{Name: "get_current_time", Arguments: "{}", Result: "now"}}, {Delta: "It is now."}},
			[]contract.ChatStreamed{{Seq: 1, Delta: "Let me see. ", Text: "Let me see. "},
				{Seq: 2, Delta: "One", Text: "Let me see. One", ToolCall: &contract.ToolCall{Name: "get_current_time", Arguments: "{}", Result: "now"}},
				{Seq: 3, Delta: "It is now.", Text: "Let me see. OneIt is now."}}},
		{"a second execution", 2, []llm.Piece{{Delta: "x"}},
			[]contract.ChatStreamed{{Seq: contract.SeqBlock + 1, Delta: "x", Text: "x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &published{}
			s := newStreamer(pub, testkit.Quiet(), "chat-1", "ana", tt.execution)
			s.interval = time.Hour // nothing but the first piece, a tool call and close may publish
			for _, p := range tt.feed {
				s.on(p)
			}
			s.close()
			s.on(llm.Piece{Delta: "after close"})
			got := pub.streamed()
			if len(got) != len(tt.want) {
				t.Fatalf("published %+v; want %+v", got, tt.want)
			}
			for i, w := range tt.want {
				g := got[i]
				if g.Seq != w.Seq || g.Delta != w.Delta || g.Text != w.Text || (g.ToolCall == nil) != (w.ToolCall == nil) ||
					(w.ToolCall != nil && *g.ToolCall != *w.ToolCall) || g.Execution != tt.execution || g.InstanceID != "chat-1" || g.Validate() != nil {
					t.Fatalf("piece %d = %+v; want %+v", i, g, w)
				}
			}
		})
	}
}

// TestStreamerInterval: with the real interval, words written faster than
// it are published together, and a pause publishes what is pending without
// waiting for the next word.
func TestStreamerInterval(t *testing.T) {
	pub := &published{}
	s := newStreamer(pub, testkit.Quiet(), "chat-1", "ana", 1)
	for range 20 {
		s.on(llm.Piece{Delta: "w "})
	}
	testkit.WaitUntil(t, 2*time.Second, "the pending words published after a pause", func() bool {
		p := pub.streamed()
		return len(p) == 2 && p[1].Text == "w w w w w w w w w w w w w w w w w w w w "
	})
	s.close()
	if n := len(pub.streamed()); n != 2 {
		t.Fatalf("%d pieces after close; want 2", n)
	}
}
