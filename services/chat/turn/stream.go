package turn

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/llm"
)

// State is the part of the sidecar's state API the stream uses: the count
// of generate_response executions of a turn.
type State interface {
	GetState(ctx context.Context, storeName, key string, meta map[string]string) (*dapr.StateItem, error)
	SaveStateWithETag(ctx context.Context, storeName, key string, data []byte, etag string, meta map[string]string, so ...dapr.StateOption) error
}

// executionTTL is how long a turn's execution count is kept: longer than a
// turn can run.
const executionTTL = "3600"

// nextExecution counts the executions of generate_response of a turn (1 for
// the first): a retry, or a run after chat-service crashed, is the next one,
// and its pieces are numbered in the next block (contract.SeqBlock). Two
// executions of one turn never run at once, so a read and a write (with the
// ETag read) are enough.
func nextExecution(ctx context.Context, st State, instanceID string) (int, error) {
	key := "stream-execution|" + instanceID
	item, err := st.GetState(ctx, contract.StateStore, key, nil)
	if err != nil {
		return 0, err
	}
	n := 0
	if item != nil && len(item.Value) > 0 {
		n, _ = strconv.Atoi(string(item.Value))
	}
	n++
	etag := ""
	if item != nil {
		etag = item.Etag
	}
	err = st.SaveStateWithETag(ctx, contract.StateStore, key, []byte(strconv.Itoa(n)), etag, map[string]string{"ttlInSeconds": executionTTL})
	return n, err
}

// streamer publishes a reply piece by piece on contract.TopicChatStream while
// the model writes it: the first piece at once, then what was written in
// each contract.StreamInterval, and a tool call as soon as its result is
// known. Publishing is best effort: a failed publish is logged and the turn
// goes on (readers get the whole reply when the turn ends).
type streamer struct {
	pub      Publisher
	log      *slog.Logger
	interval time.Duration

	mu      sync.Mutex
	ev      contract.ChatStreamed // instance, user, execution; Seq of the last piece
	first   int                   // Seq of the execution's first piece
	text    strings.Builder
	pending strings.Builder
	last    time.Time
	timer   *time.Timer
	stopped bool
}

func newStreamer(pub Publisher, log *slog.Logger, instanceID, userID string, execution int) *streamer {
	base := (execution - 1) * contract.SeqBlock
	return &streamer{pub: pub, log: log, interval: contract.StreamInterval,
		ev: contract.ChatStreamed{InstanceID: instanceID, UserID: userID, Execution: execution, Seq: base}, first: base + 1}
}

// on is the llm.Piece callback.
func (s *streamer) on(p llm.Piece) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	if p.Tool != nil {
		s.flushLocked(&contract.ToolCall{Name: p.Tool.Name, Arguments: p.Tool.Arguments, Result: p.Tool.Result})
		return
	}
	s.pending.WriteString(p.Delta)
	wait := s.interval - time.Since(s.last)
	if s.ev.Seq < s.first || wait <= 0 {
		s.flushLocked(nil)
		return
	}
	if s.timer == nil {
		s.timer = time.AfterFunc(wait, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.timer = nil
			if !s.stopped {
				s.flushLocked(nil)
			}
		})
	}
}

// close publishes what is pending and stops.
func (s *streamer) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if !s.stopped {
		s.flushLocked(nil)
	}
	s.stopped = true
}

func (s *streamer) flushLocked(tool *contract.ToolCall) {
	if s.pending.Len() == 0 && tool == nil {
		return
	}
	if s.text.Len()+s.pending.Len() > contract.MaxStreamText {
		s.stopped = true // the rest comes with the turn's end
		return
	}
	delta := s.pending.String()
	s.pending.Reset()
	s.text.WriteString(delta)
	ev := s.ev
	ev.Seq++
	ev.Delta, ev.Text, ev.ToolCall = delta, s.text.String(), tool
	s.ev.Seq = ev.Seq
	s.last = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.pub.PublishEvent(ctx, contract.StreamPubSub, contract.TopicChatStream, ev); err != nil {
		s.log.Warn("publishing a piece of the reply failed; readers get it with the turn's end", "seq", ev.Seq, "err", err)
	}
}
