package approval

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/dapr/durabletask-go/workflow"
	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/statetest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

type published struct {
	mu     sync.Mutex
	events []contract.Approval
}

func (p *published) PublishEvent(_ context.Context, _, topic string, data interface{}, _ ...dapr.PublishEventOption) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if topic != contract.TopicApprovals {
		panic(topic)
	}
	p.events = append(p.events, data.(contract.Approval))
	return nil
}

type raised struct {
	mu     sync.Mutex
	events map[string][]contract.Approval // instance → payloads
}

func (r *raised) RaiseEvent(_ context.Context, id, name string, opts ...workflow.RaiseEventOptions) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.events == nil {
		r.events = map[string][]contract.Approval{}
	}
	r.events[id] = append(r.events[id], contract.Approval{ID: name})
	return nil
}

func (r *raised) count(instance string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events[instance])
}

type fixture struct {
	s     *Store
	pub   *published
	turns *raised
	now   time.Time
}

func setup(t *testing.T) *fixture {
	f := &fixture{pub: &published{}, turns: &raised{}, now: time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)}
	f.s = &Store{State: statetest.New(), Publisher: f.pub, Turns: f.turns, Log: testkit.Quiet(), Now: func() time.Time { return f.now }}
	return f
}

func request(id, user string, at time.Time) contract.Approval {
	return contract.Approval{ID: id, InstanceID: "chat-" + id, SessionID: "s1", UserID: user, Server: "tools", Tool: "create_note",
		Name: "tools_create_note", CallID: "call_1", Arguments: `{"text":"x"}`, RequestedAt: at, ExpiresAt: at.Add(time.Minute)}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tests := []struct {
		name     string
		before   func(f *fixture, id string) // after the request
		decision contract.Decision
		want     contract.ApprovalStatus
		code     apperr.Code // of the decision's error; "" for none
	}{
		{name: "approve", decision: contract.Decision{Approve: true, DecidedBy: "u1"}, want: contract.ApprovalApproved},
		{name: "deny with a reason", decision: contract.Decision{Reason: "not now", DecidedBy: "u1"}, want: contract.ApprovalDenied},
		{name: "twice: the first decision stands", before: func(f *fixture, id string) {
			f.s.Decide(ctx, id, contract.Decision{Reason: "first", DecidedBy: "u1"})
		}, decision: contract.Decision{Approve: true, DecidedBy: "admin"}, want: contract.ApprovalDenied},
		{name: "after the expiry", before: func(f *fixture, _ string) { f.now = f.now.Add(2 * time.Minute) },
			decision: contract.Decision{Approve: true, DecidedBy: "u1"}, want: contract.ApprovalExpired, code: apperr.Invalid},
		{name: "after the turn's wait expired", before: func(f *fixture, id string) { f.s.Expire(ctx, id) },
			decision: contract.Decision{Approve: true, DecidedBy: "u1"}, want: contract.ApprovalExpired, code: apperr.Invalid},
		{name: "after the turn was cancelled", before: func(f *fixture, id string) { f.s.EndTurn(ctx, "chat-"+id) },
			decision: contract.Decision{Approve: true, DecidedBy: "u1"}, want: contract.ApprovalDenied, code: apperr.Invalid},
		{name: "no decider", decision: contract.Decision{Approve: true}, code: apperr.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			id := "a-" + time.Now().Format("150405.000000000")
			a, err := f.s.Request(ctx, request(id, "u1", f.now))
			if err != nil || a.Status != contract.ApprovalPending {
				t.Fatalf("request: %+v %v", a, err)
			}
			if p, _ := f.s.Pending(ctx, "u1"); len(p) != 1 || p[0].ID != id {
				t.Fatalf("pending after the request: %+v", p)
			}
			if tt.before != nil {
				tt.before(f, id)
			}
			got, err := f.s.Decide(ctx, id, tt.decision)
			if apperr.CodeOf(err) != tt.code && !(tt.code == "" && err == nil) {
				t.Fatalf("decide: %v; want code %q", err, tt.code)
			}
			if tt.want != "" && got.Status != tt.want {
				t.Errorf("decided %s; want %s", got.Status, tt.want)
			}
			rec, _ := f.s.Get(ctx, id)
			if tt.want != "" && rec.Status != tt.want {
				t.Errorf("recorded %s; want %s", rec.Status, tt.want)
			}
			if tt.want == contract.ApprovalApproved || tt.want == contract.ApprovalDenied && tt.code == "" {
				if f.turns.count("chat-"+id) == 0 {
					t.Error("the decision was not handed to the turn")
				}
				if p, _ := f.s.Pending(ctx, "u1"); len(p) != 0 {
					t.Errorf("still pending after the decision: %+v", p)
				}
			}
		})
	}
}

// TestExpireAfterDecision: the turn's timer firing just after a decision
// was recorded gets that decision, not an expiry.
func TestExpireAfterDecision(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	f.s.Request(ctx, request("a1", "u1", f.now))
	f.s.Decide(ctx, "a1", contract.Decision{Approve: true, DecidedBy: "u1"})
	if a, err := f.s.Expire(ctx, "a1"); err != nil || a.Status != contract.ApprovalApproved {
		t.Fatalf("expire after a decision: %+v %v; want APPROVED", a, err)
	}
	if a, err := f.s.Expire(ctx, "a1"); err != nil || a.Status != contract.ApprovalApproved {
		t.Fatalf("expire again: %+v %v", a, err)
	}
}

// TestConcurrentDecisions: of two users deciding at once, one wins; both
// are answered the winner's decision.
func TestConcurrentDecisions(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	f.s.Request(ctx, request("a1", "u1", f.now))
	var wg sync.WaitGroup
	got := make([]contract.Approval, 8)
	for i := range got {
		wg.Go(func() {
			d := contract.Decision{Approve: i%2 == 0, DecidedBy: "u1"}
			a, err := f.s.Decide(ctx, "a1", d)
			if err != nil {
				t.Error(err)
			}
			got[i] = a
		})
	}
	wg.Wait()
	for _, a := range got[1:] {
		if a.Status != got[0].Status {
			t.Fatalf("decisions answered differently: %+v", got)
		}
	}
	changes := 0
	for _, e := range f.pub.events {
		if e.Status != contract.ApprovalPending {
			changes++
		}
	}
	if changes != 1 {
		t.Errorf("%d decisions announced; want 1", changes)
	}
}

func TestRequestTwice(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	f.s.Request(ctx, request("a1", "u1", f.now))
	f.s.Decide(ctx, "a1", contract.Decision{Approve: true, DecidedBy: "u1"})
	// The activity runs again (chat-service crashed after it recorded the request).
	a, err := f.s.Request(ctx, request("a1", "u1", f.now))
	if err != nil || a.Status != contract.ApprovalApproved {
		t.Fatalf("request again: %+v %v; want the decision recorded", a, err)
	}
	if p, _ := f.s.Pending(ctx, "u1"); len(p) != 0 {
		t.Errorf("pending: %+v", p)
	}
	if _, err := f.s.Decide(ctx, "nope", contract.Decision{Approve: true, DecidedBy: "u1"}); apperr.CodeOf(err) != apperr.NotFound {
		t.Errorf("unknown: %v", err)
	}
	b, _ := json.Marshal(a)
	if len(b) == 0 {
		t.Fatal("unreadable")
	}
}
