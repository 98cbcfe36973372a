package graph

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/daca-go/daca/graph/model"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// script is a turn that moves one state further every `every` reads.
type script struct {
	states []contract.ChatRun
	every  int
	reads  atomic.Int64
}

func (s *script) fetch(_ context.Context, id string) (*contract.ChatRun, error) {
	n := int(s.reads.Add(1)) - 1
	r := s.states[min(n/s.every, len(s.states)-1)]
	r.InstanceID = id
	return &r, nil
}

var turn = []contract.ChatRun{
	{Status: "RUNNING", Stage: "fetching_context"},
	{Status: "RUNNING", Stage: "generating_response"},
	{Status: "RUNNING", Stage: "saving_conversation"},
	{Status: "COMPLETED"},
}

func rank(r *model.ChatRun) int {
	for i, s := range turn {
		if string(r.Status) == string(s.Status) && (r.Stage == nil && s.Stage == "" || r.Stage != nil && *r.Stage == s.Stage) {
			return i
		}
	}
	return -1
}

// drain reads a subscription to its end (at most 10 s).
func drain(t *testing.T, ch <-chan *model.ChatRun) []*model.ChatRun {
	t.Helper()
	var got []*model.ChatRun
	deadline := time.After(10 * time.Second)
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				return got
			}
			got = append(got, r)
		case <-deadline:
			t.Fatalf("subscription still open after 10s; got %d states", len(got))
		}
	}
}

func waitPolling(t *testing.T, w *RunWatch, want int) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, "the pollers", func() error {
		if n := w.Polling(); n != want {
			return fmt.Errorf("%d turns polled; want %d", n, want)
		}
		return nil
	})
}

func TestRunWatchSharesOnePollerPerTurn(t *testing.T) {
	t.Parallel()
	s := &script{states: turn, every: 3}
	w := NewRunWatch(s.fetch, time.Millisecond, testkit.Quiet())
	const subs = 50
	first := turn[0]
	first.InstanceID = "wf-1"
	outs := make([][]*model.ChatRun, subs)
	var wg sync.WaitGroup
	for i := range subs {
		ch := w.Follow(context.Background(), first)
		wg.Add(1)
		go func() { defer wg.Done(); outs[i] = drain(t, ch) }()
	}
	wg.Wait()
	for i, got := range outs {
		if len(got) == 0 || got[len(got)-1].Status != model.ChatStatusCompleted {
			t.Fatalf("subscriber %d did not end with COMPLETED: %d states", i, len(got))
		}
		for j := 1; j < len(got); j++ {
			if rank(got[j]) <= rank(got[j-1]) {
				t.Fatalf("subscriber %d: state %d (%s) does not follow %s", i, j, str(got[j]), str(got[j-1]))
			}
		}
	}
	// One poller: the turn ends after 3 reads per state, however many follow it.
	if n := s.reads.Load(); n > int64(3*len(turn)) {
		t.Fatalf("%d reads for %d subscribers; want one poller (<= %d)", n, subs, 3*len(turn))
	}
	waitPolling(t, w, 0)
}

func TestRunWatchStopsWhenTheLastSubscriberLeaves(t *testing.T) {
	s := &script{states: turn[:1], every: 1} // never ends
	w := NewRunWatch(s.fetch, time.Millisecond, testkit.Quiet())
	first := turn[0]
	first.InstanceID = "wf-2"
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	ch1, ch2 := w.Follow(ctx1, first), w.Follow(ctx2, first)
	<-ch1
	<-ch2
	waitPolling(t, w, 1)
	cancel1()
	drain(t, ch1)
	if w.Polling() != 1 {
		t.Fatal("the poller stopped while a subscriber still follows the turn")
	}
	reads := s.reads.Load()
	testkit.WaitUntil(t, 5*time.Second, "the turn still polled for the other subscriber", func() bool { return s.reads.Load() >= reads+3 })
	cancel2()
	drain(t, ch2)
	waitPolling(t, w, 0)
	// goleak (TestMain) checks that the poller's goroutine is gone.
}

func TestRunWatchNeverSendsAnOlderState(t *testing.T) {
	t.Parallel()
	// The poller's read starts, then a subscriber arrives with a newer state
	// than that read will return.
	started, release := make(chan struct{}), make(chan contract.ChatRun)
	fetch := func(ctx context.Context, id string) (*contract.ChatRun, error) {
		select {
		case started <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		select {
		case r := <-release:
			return &r, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	w := NewRunWatch(fetch, time.Millisecond, testkit.Quiet())
	early := w.Follow(context.Background(), turn[0])
	<-early   // its first state
	<-started // the poller's read is under way
	late := w.Follow(context.Background(), turn[1])
	if r := <-late; rank(r) != 1 {
		t.Fatalf("late subscriber's first state %s", str(r))
	}
	release <- turn[0] // older than what late has sent
	<-started
	release <- turn[3]
	for name, ch := range map[string]<-chan *model.ChatRun{"early": early, "late": late} {
		got := drain(t, ch)
		if len(got) != 1 || rank(got[0]) != 3 {
			var s []string
			for _, r := range got {
				s = append(s, str(r))
			}
			t.Fatalf("%s subscriber got %v after its first state; want only COMPLETED", name, s)
		}
	}
	waitPolling(t, w, 0)
}

func TestRunWatchSlowSubscriberGetsTheFinalState(t *testing.T) {
	t.Parallel()
	s := &script{states: turn, every: 1}
	w := NewRunWatch(s.fetch, time.Millisecond, testkit.Quiet())
	first := turn[0]
	first.InstanceID = "wf-3"
	slow, fast := w.Follow(context.Background(), first), w.Follow(context.Background(), first)
	got := drain(t, fast) // the slow one reads nothing meanwhile
	if last := got[len(got)-1]; last.Status != model.ChatStatusCompleted {
		t.Fatalf("fast subscriber ended on %s", str(last))
	}
	got = drain(t, slow)
	if last := got[len(got)-1]; last.Status != model.ChatStatusCompleted {
		t.Fatalf("slow subscriber ended on %s", str(last))
	}
	waitPolling(t, w, 0)
}

func TestRunWatchEndedTurn(t *testing.T) {
	t.Parallel()
	w := NewRunWatch(func(context.Context, string) (*contract.ChatRun, error) {
		t.Fatal("an ended turn is not polled")
		return nil, nil
	}, time.Millisecond, testkit.Quiet())
	got := drain(t, w.Follow(context.Background(), contract.ChatRun{InstanceID: "wf-4", Status: "FAILED", Error: "boom"}))
	if len(got) != 1 || got[0].Status != model.ChatStatusFailed || w.Polling() != 0 {
		t.Fatalf("got %d states, %d turns polled", len(got), w.Polling())
	}
}

func str(r *model.ChatRun) string {
	if r.Stage != nil {
		return fmt.Sprintf("%s/%s", r.Status, *r.Stage)
	}
	return string(r.Status)
}
