package session

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/testkit"
	"github.com/daca-go/daca/services/chat/turn"
)

// sidecar keeps actor state, reminders and markers in memory.
type sidecar struct {
	mu        sync.Mutex
	actor     map[string][]byte
	reminders map[string]bool
	markers   map[string]turn.Queued
	state     map[string][]byte
}

func (s *sidecar) GetActorState(_ context.Context, in *dapr.GetActorStateRequest) (*dapr.GetActorStateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &dapr.GetActorStateResponse{Data: s.actor[in.ActorID+"/"+in.KeyName]}, nil
}

func (s *sidecar) SaveStateTransactionally(_ context.Context, _, id string, ops []*dapr.ActorStateOperation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, op := range ops {
		s.actor[id+"/"+op.Key] = op.Value
	}
	return nil
}

func (s *sidecar) RegisterActorReminder(_ context.Context, in *dapr.RegisterActorReminderRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reminders[in.ActorID] = true
	return nil
}

func (s *sidecar) UnregisterActorReminder(_ context.Context, in *dapr.UnregisterActorReminderRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.reminders, in.ActorID)
	return nil
}

func (s *sidecar) GetState(_ context.Context, _, key string, _ map[string]string) (*dapr.StateItem, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &dapr.StateItem{Key: key, Value: s.state[key]}, nil
}

func (s *sidecar) SaveState(_ context.Context, _, key string, data []byte, _ map[string]string, _ ...dapr.StateOption) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state[key] = data
	var q turn.Queued
	json.Unmarshal(data, &q)
	s.markers[key] = q
	return nil
}

// turns records what the actor started and stopped.
type turns struct {
	started []turn.Input // in order; Text is the turn's id
	ended   map[string]bool
	stopped []string
}

func (t *turns) Start(_ context.Context, id string, in turn.Input, _ bool) error {
	in.Text = id
	t.started = append(t.started, in)
	return nil
}
func (t *turns) Ended(_ context.Context, id string) (bool, error) { return t.ended[id], nil }
func (t *turns) Stop(_ context.Context, id string) error {
	t.stopped = append(t.stopped, id)
	t.ended[id] = true
	return nil
}

func (t *turns) ids() []string {
	var out []string
	for _, in := range t.started {
		out = append(out, in.Text)
	}
	return out
}

func setup() (*Actor, *sidecar, *turns) {
	sc := &sidecar{actor: map[string][]byte{}, reminders: map[string]bool{}, markers: map[string]turn.Queued{}, state: map[string][]byte{}}
	tu := &turns{ended: map[string]bool{}}
	return &Actor{Sidecar: sc, Turns: tu, Log: testkit.Quiet()}, sc, tu
}

// accept sends turn id to the actor as chat-service does: the request
// written to its state, the actor called with the id.
func accept(t *testing.T, a *Actor, id string, p contract.BusyPolicy) Accepted {
	t.Helper()
	req, _ := json.Marshal(Accept{InstanceID: id, Input: turn.Input{UserID: "ana", SessionID: "s1"}, Policy: p})
	a.Sidecar.SaveState(t.Context(), contract.StateStore, RequestKey(id), req, nil)
	b, _ := json.Marshal(id)
	out, err := a.Call(t.Context(), "s1", MethodAccept, b)
	if err != nil {
		t.Fatal(err)
	}
	return out.(Accepted)
}

func call(t *testing.T, a *Actor, method, id string) any {
	t.Helper()
	b, _ := json.Marshal(id)
	out, err := a.Call(t.Context(), "s1", method, b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestOneTurnAtATime: the first turn starts; the next ones wait in the
// order accepted and start one by one as each ends, each after the one
// before (Input.After); a repeated accept changes nothing.
func TestOneTurnAtATime(t *testing.T) {
	t.Parallel()
	a, sc, tu := setup()
	if got := accept(t, a, "t1", ""); got.Status != contract.RunPending {
		t.Fatalf("first: %+v", got)
	}
	for _, id := range []string{"t2", "t3"} {
		if got := accept(t, a, id, contract.BusyEnqueue); got.Status != contract.RunQueued || got.Running != "t1" {
			t.Fatalf("%s: %+v; want QUEUED behind t1", id, got)
		}
	}
	if got := accept(t, a, "t2", ""); got.Status != contract.RunQueued {
		t.Fatalf("t2 again: %+v", got)
	}
	if !sc.reminders["s1"] || sc.markers[turn.QueuedKey("t2")].SessionID != "s1" {
		t.Fatalf("reminder %v, markers %v", sc.reminders, sc.markers)
	}
	if !slices.Equal(tu.ids(), []string{"t1"}) {
		t.Fatalf("started %v", tu.ids())
	}
	call(t, a, MethodDone, "t2") // not the running one: nothing
	call(t, a, MethodDone, "t1")
	call(t, a, MethodDone, "t1") // repeated
	if !slices.Equal(tu.ids(), []string{"t1", "t2"}) || tu.started[1].After != "t1" {
		t.Fatalf("after t1 ended: %v (after %q)", tu.ids(), tu.started[1].After)
	}
	// t2 ends without a word (a crash): the reminder notices.
	tu.ended["t2"] = true
	call(t, a, "remind/"+reminder, "")
	if !slices.Equal(tu.ids(), []string{"t1", "t2", "t3"}) || tu.started[2].After != "t2" {
		t.Fatalf("after the reminder: %v", tu.ids())
	}
	call(t, a, "remind/"+reminder, "")
	if sc.reminders["s1"] {
		t.Fatal("the reminder stays with nothing waiting")
	}
	if got := accept(t, a, "t1", ""); got.Status != contract.RunPending || len(tu.started) != 3 {
		t.Fatalf("t1 accepted again: %+v, started %v", got, tu.ids())
	}
}

func TestRejectInterruptDrop(t *testing.T) {
	t.Parallel()
	a, sc, tu := setup()
	accept(t, a, "t1", "")
	if got := accept(t, a, "t2", contract.BusyReject); !got.Refused || got.Running != "t1" {
		t.Fatalf("reject: %+v", got)
	}
	accept(t, a, "t3", contract.BusyEnqueue)
	if got := accept(t, a, "t4", contract.BusyInterrupt); got.Status != contract.RunPending {
		t.Fatalf("interrupt: %+v", got)
	}
	if !slices.Equal(tu.stopped, []string{"t1"}) || !slices.Equal(tu.ids(), []string{"t1", "t4"}) {
		t.Fatalf("stopped %v, started %v", tu.stopped, tu.ids())
	}
	if dropped := call(t, a, MethodDrop, "t3"); dropped != true || !sc.markers[turn.QueuedKey("t3")].Cancelled {
		t.Fatalf("drop: %v %v", dropped, sc.markers)
	}
	call(t, a, MethodDone, "t4")
	if len(tu.started) != 2 {
		t.Fatalf("the dropped turn started: %v", tu.ids())
	}
	// A running turn that ended unreported frees the session for the next.
	accept(t, a, "t5", "")
	tu.ended["t5"] = true
	if got := accept(t, a, "t6", contract.BusyReject); got.Refused {
		t.Fatalf("refused behind an ended turn: %+v", got)
	}
}

// TestStateCache: the actor reads its state from the store once while it
// stays here; after a deactivation (Forget) it reads it again — what
// another replica saved meanwhile counts.
func TestStateCache(t *testing.T) {
	t.Parallel()
	a, sc, tu := setup()
	accept(t, a, "t1", "")
	// Another replica ran the actor meanwhile: t1 ended, t9 runs.
	sc.mu.Lock()
	sc.actor["s1/"+stateKey] = []byte(`{"running":"t9","last":"t9"}`)
	sc.mu.Unlock()
	if got := accept(t, a, "t2", contract.BusyReject); got.Running != "t1" {
		t.Fatalf("while active here: %+v; want the cached state (t1 runs)", got)
	}
	a.Forget("s1")
	if got := accept(t, a, "t3", contract.BusyReject); !got.Refused || got.Running != "t9" {
		t.Fatalf("after a deactivation: %+v; want the stored state (t9 runs)", got)
	}
	if len(tu.started) != 1 {
		t.Fatalf("started %v", tu.ids())
	}
}

// TestAcceptOnlyWhatChatServiceSent: an accept of a turn chat-service never
// wrote (another app calling the actor, which Dapr does not stop) starts
// nothing.
func TestAcceptOnlyWhatChatServiceSent(t *testing.T) {
	t.Parallel()
	a, _, tu := setup()
	for _, session := range []string{"s1", "s2"} {
		b, _ := json.Marshal("forged")
		if _, err := a.Call(t.Context(), session, MethodAccept, b); err == nil {
			t.Fatalf("a forged accept on %s went through", session)
		}
	}
	req, _ := json.Marshal(Accept{InstanceID: "t1", Input: turn.Input{UserID: "ana", SessionID: "s1"}})
	a.Sidecar.SaveState(t.Context(), contract.StateStore, RequestKey("t1"), req, nil)
	b, _ := json.Marshal("t1")
	if _, err := a.Call(t.Context(), "s2", MethodAccept, b); err == nil { // s1's turn, on another session
		t.Fatal("a turn accepted on a session it was not sent to")
	}
	if len(tu.started) != 0 {
		t.Fatalf("started %v", tu.ids())
	}
}

// flaky is an actor host that fails the first fails calls (its host was
// stopping), then answers.
type flaky struct {
	mu           sync.Mutex
	fails, calls int
}

func (f *flaky) InvokeActor(context.Context, *dapr.InvokeActorRequest) (*dapr.InvokeActorResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= f.fails {
		return nil, context.Canceled
	}
	return &dapr.InvokeActorResponse{Data: []byte("true")}, nil
}

// TestCallsAreMadeAgain: a session actor's call that fails (its host was
// stopping or starting) is made again, at most actorAttempts times.
func TestCallsAreMadeAgain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		fails, wantCalls int
		wantErr          bool
	}{
		{fails: 0, wantCalls: 1},
		{fails: 2, wantCalls: 3},
		{fails: 5, wantCalls: actorAttempts, wantErr: true},
	} {
		f := &flaky{fails: tc.fails}
		dropped, err := Client{Invoker: f}.Drop(t.Context(), "s", "t")
		if (err != nil) != tc.wantErr || f.calls != tc.wantCalls || (err == nil && !dropped) {
			t.Errorf("%d failures: err %v, dropped %v after %d calls; want %d calls", tc.fails, err, dropped, f.calls, tc.wantCalls)
		}
	}
}
