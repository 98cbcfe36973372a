// Package replies keeps the replies being written, for the chatStream
// subscription: every gateway replica receives every piece chat-service
// publishes (contract.ChatStreamed), puts them in order by seq, and hands
// them to its subscribers; a subscriber that joins late first gets what was
// written so far. A turn's pieces are kept while it runs and a short while
// after it ended (Keep), never more than Max turns.
//
// Each subscriber has its own buffered channel; one that falls behind is
// dropped (its context reported to onDrop, then its channel closed), like
// the other subscriptions (gateway/fanout).
package replies

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/contract"
)

// Defaults.
const (
	DefaultKeep = time.Minute      // a finished turn's pieces, for late and resuming subscribers
	DefaultIdle = 10 * time.Minute // a turn with no piece for this long is forgotten
	DefaultMax  = 10000            // turns kept at most
	maxPending  = 32               // pieces held back waiting for an earlier one
)

// Store holds the replies being written.
type Store struct {
	Keep, Idle time.Duration
	Max        int

	buf    int
	onDrop func(context.Context)
	now    func() time.Time

	mu    sync.Mutex
	turns map[string]*turn
}

type turn struct {
	id        string
	execution int
	next      int // the seq expected next; 0 before any piece
	text      string
	chunks    []*model.ChatChunk // of the current execution, in order; the last may be done
	pending   map[int]contract.ChatStreamed
	restarted bool // the next chunk starts the reply over
	done      bool
	shown     map[string]contract.ToolCallStatus // tool call id → the last status handed on
	touched   time.Time
	subs      map[*sub]struct{}
}

type sub struct {
	ctx   context.Context
	ch    chan *model.ChatChunk
	after int // the client has the chunks up to this seq
	once  sync.Once
}

// New returns a store whose subscribers buffer up to buf chunks (beyond
// what they are replayed on joining).
func New(buf int, onDrop func(context.Context)) *Store {
	if buf < 1 {
		buf = 1
	}
	return &Store{Keep: DefaultKeep, Idle: DefaultIdle, Max: DefaultMax, buf: buf, onDrop: onDrop, now: time.Now, turns: map[string]*turn{}}
}

func (s *Store) turnLocked(id string) *turn {
	t, ok := s.turns[id]
	if !ok {
		t = &turn{id: id, subs: map[*sub]struct{}{}}
		s.turns[id] = t
		if len(s.turns) > s.Max {
			s.evictLocked()
		}
	}
	t.touched = s.now()
	return t
}

// Add takes a piece published by chat-service. Pieces may come in any
// order and more than once: each is handed on once, in order of seq. A
// piece of a later execution starts the reply over; pieces of an earlier
// one are ignored from then on. A gap that does not close while maxPending
// later pieces arrive is skipped (every piece carries the whole text).
func (s *Store) Add(ev contract.ChatStreamed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.turnLocked(ev.InstanceID)
	if t.done || ev.Execution < t.execution {
		return
	}
	if ev.Execution > t.execution {
		t.restarted = t.execution != 0 && t.text != ""
		t.execution, t.text, t.chunks, t.pending = ev.Execution, "", nil, nil
		t.next = (ev.Execution-1)*contract.SeqBlock + 1
	}
	if ev.Seq < t.next {
		return // handed on already
	}
	if ev.Seq > t.next && len(t.chunks) > 0 {
		if t.pending == nil {
			t.pending = map[int]contract.ChatStreamed{}
		}
		t.pending[ev.Seq] = ev
		if len(t.pending) < maxPending {
			return
		}
		ev = t.takeLowest()
	}
	s.emitLocked(t, ev)
	for {
		p, ok := t.pending[t.next]
		if !ok {
			break
		}
		delete(t.pending, t.next)
		s.emitLocked(t, p)
	}
}

func (t *turn) takeLowest() contract.ChatStreamed {
	seqs := make([]int, 0, len(t.pending))
	for q := range t.pending {
		seqs = append(seqs, q)
	}
	sort.Ints(seqs)
	ev := t.pending[seqs[0]]
	delete(t.pending, seqs[0])
	return ev
}

func (s *Store) emitLocked(t *turn, ev contract.ChatStreamed) {
	delta := ev.Delta
	if strings.HasPrefix(ev.Text, t.text) {
		delta = ev.Text[len(t.text):] // also covers pieces skipped or missed
	}
	c := &model.ChatChunk{InstanceID: t.id, Seq: ev.Seq, Delta: delta, Text: ev.Text, Status: model.ChatStatusRunning, Restarted: t.restarted}
	if tc := ev.ToolCall; tc != nil {
		c.ToolCall = model.ToolCallOf(*tc)
		t.showLocked(*tc)
	}
	t.restarted = false
	t.text, t.next = ev.Text, ev.Seq+1
	t.chunks = append(t.chunks, c)
	s.deliverLocked(t, c)
}

func (t *turn) showLocked(c contract.ToolCall) {
	if c.ID == "" {
		return
	}
	if t.shown == nil {
		t.shown = map[string]contract.ToolCallStatus{}
	}
	t.shown[c.ID] = c.Status
}

// Tools hands on the final state of a turn's tool calls (its conversation
// event's) that its stream has not shown: a piece that came late or was
// lost (pieces are best effort). One chunk per call, before the turn's end.
func (s *Store) Tools(id string, calls []contract.ToolCall) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.turns[id]
	if !ok || t.done {
		return
	}
	for _, tc := range calls {
		if tc.ID == "" || t.shown[tc.ID] == tc.Status {
			continue
		}
		s.toolLocked(t, tc)
	}
}

// toolLocked hands on a chunk of the turn's with the tool call tc and the
// text so far, numbered after the last.
func (s *Store) toolLocked(t *turn, tc contract.ToolCall) {
	seq := max(t.next, 1)
	c := &model.ChatChunk{InstanceID: t.id, Seq: seq, Text: t.text, Status: model.ChatStatusRunning, ToolCall: model.ToolCallOf(tc), Restarted: t.restarted}
	t.restarted = false
	t.showLocked(tc)
	t.next = seq + 1
	t.chunks = append(t.chunks, c)
	s.deliverLocked(t, c)
}

// Approval hands on a change of a tool call's request for a decision (a
// request, a decision, an expiry) as a chunk with the call — RUNNING while
// it waits or runs — and the request. A turn this replica streams nothing
// of is left alone.
func (s *Store) Approval(id string, a contract.Approval) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.turns[id]
	if !ok || t.done {
		return
	}
	tc := contract.ToolCall{ID: a.CallID, Name: a.Name, Server: a.Server, Arguments: a.Arguments, Status: contract.ToolRunning, Approval: &a}
	if a.Status == contract.ApprovalDenied || a.Status == contract.ApprovalExpired {
		tc.Status, tc.Result = contract.ToolFailed, a.Outcome()
	}
	s.toolLocked(t, tc)
}

// Finish ends a turn's stream with its end state: the last chunk (done) has
// the status and, for a completed turn, the reply (what the pieces did not
// carry yet is its delta); a stopped or failed turn keeps the text so far.
// Only the first call counts. With known false it does nothing for a turn
// the store has never heard of (conversation events of turns nobody
// streamed).
func (s *Store) Finish(id string, status model.ChatStatus, reply string, known bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.turns[id]; !ok && known {
		return
	}
	t := s.turnLocked(id)
	if t.done {
		return
	}
	final := t.text
	if status == model.ChatStatusCompleted && reply != "" {
		final = reply
	}
	delta, restarted := final, t.restarted || t.text != ""
	if strings.HasPrefix(final, t.text) {
		delta, restarted = final[len(t.text):], t.restarted
	}
	seq := t.next
	if seq == 0 {
		seq = 1
	}
	c := &model.ChatChunk{InstanceID: id, Seq: seq, Delta: delta, Text: final, Status: status, Done: true, Restarted: restarted}
	t.done, t.text, t.pending = true, final, nil
	t.chunks = append(t.chunks, c)
	s.deliverLocked(t, c)
	for sb := range t.subs {
		s.removeLocked(t, sb, false)
	}
}

func (s *Store) deliverLocked(t *turn, c *model.ChatChunk) {
	for sb := range t.subs {
		c := c
		if c.Seq <= sb.after { // numbered as the client has it already (another replica's count)
			if !c.Done {
				continue
			}
			end := *c
			end.Delta = ""
			c = &end
		}
		select {
		case sb.ch <- c:
		default:
			s.removeLocked(t, sb, true)
		}
	}
}

func (s *Store) removeLocked(t *turn, sb *sub, slow bool) {
	sb.once.Do(func() {
		delete(t.subs, sb)
		if slow && s.onDrop != nil {
			s.onDrop(sb.ctx)
		}
		close(sb.ch)
	})
}

// Subscribe returns the turn's chunks after seq after (0: all), then each
// new one, until the done chunk or ctx's end; then the channel is closed.
// A client that resumes from an earlier execution's seq gets the current
// execution's chunks, the first marked restarted.
func (s *Store) Subscribe(ctx context.Context, id string, after int) <-chan *model.ChatChunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.turnLocked(id)
	var replay []*model.ChatChunk
	for _, c := range t.chunks {
		if c.Seq > after {
			replay = append(replay, c)
		}
	}
	if len(replay) > 0 && after > 0 && t.execution > 0 && contract.ExecutionOf(after) < t.execution && !replay[0].Restarted {
		r := *replay[0]
		r.Restarted = true
		replay[0] = &r
	}
	if t.done && len(replay) == 0 { // the client has seen it all: the end again, adding nothing
		end := *t.chunks[len(t.chunks)-1]
		end.Delta = ""
		replay = append(replay, &end)
	}
	ch := make(chan *model.ChatChunk, len(replay)+s.buf)
	for _, c := range replay {
		ch <- c
	}
	if t.done {
		close(ch)
		return ch
	}
	sb := &sub{ctx: ctx, ch: ch, after: after}
	t.subs[sb] = struct{}{}
	context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.removeLocked(t, sb, false)
	})
	return ch
}

// Run forgets finished turns after Keep and idle ones after Idle, every
// interval, until ctx ends.
func (s *Store) Run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.Sweep()
		}
	}
}

// Sweep forgets what Run forgets, once.
func (s *Store) Sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for id, t := range s.turns {
		if len(t.subs) > 0 {
			continue
		}
		if t.done && now.Sub(t.touched) > s.Keep || now.Sub(t.touched) > s.Idle {
			delete(s.turns, id)
		}
	}
}

// evictLocked makes room: the least recently touched turn without
// subscribers goes (finished ones first).
func (s *Store) evictLocked() {
	var victim *turn
	for _, t := range s.turns {
		if len(t.subs) > 0 {
			continue
		}
		if victim == nil || t.done && !victim.done || t.done == victim.done && t.touched.Before(victim.touched) {
			victim = t
		}
	}
	if victim != nil {
		delete(s.turns, victim.id)
	}
}

// Len returns how many turns are kept and how many subscribers they have.
func (s *Store) Len() (turns, subscribers int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.turns {
		subscribers += len(t.subs)
	}
	return len(s.turns), subscribers
}
