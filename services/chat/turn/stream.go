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
// the first): a later round of the tool loop, a retry, or a run after
// chat-service crashed is the next one, and its pieces are numbered in the
// next block (contract.SeqBlock). The turn's first round (first) tries one
// call: a first-write save without an ETag, which Dapr's state API refuses
// when the key exists. Otherwise — or when that was refused — it reads the
// count and writes the next with the ETag it read: a later round never
// tries the first write, whose refusal the state store's resiliency policy
// would retry for about a second before it failed. Two executions of one
// turn never count at once (an execution waits for its count before it
// ends).
func nextExecution(ctx context.Context, st State, instanceID string, first bool) (int, error) {
	key := "stream-execution|" + instanceID
	meta := map[string]string{"ttlInSeconds": executionTTL}
	firstWrite := dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite)
	if first {
		if err := st.SaveStateWithETag(ctx, contract.StateStore, key, []byte("1"), "", meta, firstWrite); err == nil {
			return 1, nil
		}
	}
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
	return n, st.SaveStateWithETag(ctx, contract.StateStore, key, []byte(strconv.Itoa(n)), etag, meta, firstWrite)
}

// streamer publishes a reply piece by piece on contract.TopicChatStream while
// the model writes it: the first piece at once, then what was written in
// each contract.StreamInterval, and a tool call as soon as its result is
// known. The model never waits for the sidecar: a goroutine of the
// streamer's own counts the execution (while the model starts) and
// publishes the pieces in order; pieces that wait while it is busy go out
// together. Publishing is best effort: a failed publish is logged and the
// turn goes on (readers get the whole reply when the turn ends, whose last
// chunk carries whatever a piece still on its way would have).
type streamer struct {
	pub      Publisher
	log      *slog.Logger
	interval time.Duration

	mu      sync.Mutex
	queue   []piece // cut, not yet published
	pending strings.Builder
	size    int // bytes cut so far
	cut     bool
	last    time.Time
	timer   *time.Timer
	stopped bool // no more input (closed, or over MaxStreamText)
	closed  bool

	wake    chan struct{} // cap 1: the queue grew, or the streamer closed
	counted chan struct{} // the execution is known (or could not be counted)
	done    chan struct{} // the sender published everything and ended
}

// piece is what a cut of the reply publishes.
type piece struct {
	delta string
	tool  *contract.ToolCall
}

// newStreamer starts the streamer of one execution of generate_response,
// whose number count gives (nextExecution); ctx carries the trace (its
// cancellation is not used: pieces still on their way go out after the
// activity returned).
// The text of its pieces follows prefix, the reply so far (the turn's
// earlier rounds).
func newStreamer(ctx context.Context, pub Publisher, log *slog.Logger, instanceID, userID, prefix string, count func(context.Context) (int, error)) *streamer {
	s := &streamer{pub: pub, log: log, interval: contract.StreamInterval, size: len(prefix),
		wake: make(chan struct{}, 1), counted: make(chan struct{}), done: make(chan struct{})}
	go s.send(context.WithoutCancel(ctx), contract.ChatStreamed{InstanceID: instanceID, UserID: userID}, prefix, count)
	return s
}

// tool publishes a tool call (with its result once it has one) as a piece
// of its own.
func (s *streamer) tool(c ToolCall) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		w := c.Wire()
		s.cutLocked(&w)
	}
}

// text is the callback of the model's text as it is written.
func (s *streamer) text(delta string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.pending.WriteString(delta)
	wait := s.interval - time.Since(s.last)
	if !s.cut || wait <= 0 {
		s.cutLocked(nil)
		return
	}
	if s.timer == nil {
		s.timer = time.AfterFunc(wait, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.timer = nil
			if !s.stopped {
				s.cutLocked(nil)
			}
		})
	}
}

// close cuts what is pending and waits until the execution is counted (so
// that the next execution of the turn counts after this one), not for the
// pieces on their way.
func (s *streamer) close() {
	s.mu.Lock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if !s.stopped {
		s.cutLocked(nil)
	}
	s.stopped, s.closed = true, true
	s.mu.Unlock()
	s.signal()
	<-s.counted
}

// wait waits until every piece cut has been published (or failed).
func (s *streamer) wait() { <-s.done }

func (s *streamer) cutLocked(tool *contract.ToolCall) {
	if s.pending.Len() == 0 && tool == nil {
		return
	}
	if s.size+s.pending.Len() > contract.MaxStreamText {
		s.stopped = true // the rest comes with the turn's end
		return
	}
	p := piece{delta: s.pending.String(), tool: tool}
	s.pending.Reset()
	s.size += len(p.delta)
	s.cut, s.last = true, time.Now()
	s.queue = append(s.queue, p)
	s.signal()
}

func (s *streamer) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// send counts the execution, then publishes the pieces as they are cut,
// until the streamer is closed and nothing is left.
func (s *streamer) send(ctx context.Context, ev contract.ChatStreamed, prefix string, count func(context.Context) (int, error)) {
	defer close(s.done)
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	exec, err := count(cctx)
	cancel()
	close(s.counted)
	if err != nil {
		s.log.Warn("counting this execution failed; the reply is not streamed", "err", err)
		s.mu.Lock()
		s.stopped, s.queue = true, nil
		s.mu.Unlock()
		return
	}
	ev.Execution, ev.Seq = exec, (exec-1)*contract.SeqBlock
	var text strings.Builder
	text.WriteString(prefix)
	for {
		s.mu.Lock()
		batch, closed := s.queue, s.closed
		s.queue = nil
		s.mu.Unlock()
		for len(batch) > 0 {
			// What waited goes out together, up to and with the first tool call.
			p := piece{}
			for len(batch) > 0 && p.tool == nil {
				p.delta += batch[0].delta
				p.tool = batch[0].tool
				batch = batch[1:]
			}
			text.WriteString(p.delta)
			ev.Seq++
			ev.Delta, ev.Text, ev.ToolCall = p.delta, text.String(), p.tool
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if err := s.pub.PublishEvent(pctx, contract.StreamPubSub, contract.TopicChatStream, ev); err != nil {
				s.log.Warn("publishing a piece of the reply failed; readers get it with the turn's end", "seq", ev.Seq, "err", err)
			}
			cancel()
		}
		if closed { // close cut the last piece before it set closed: nothing follows
			return
		}
		<-s.wake
	}
}
