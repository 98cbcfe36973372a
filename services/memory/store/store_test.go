package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/statetest"
	"github.com/daca-go/daca/internal/dev/testkit"
)

func fixedSummary(s string) Summarizer {
	return func(context.Context, contract.Profile, []contract.Entry) (string, contract.Usage, error) {
		return s, contract.Usage{PromptTokens: 10, CompletionTokens: 2, LLMCalls: 1}, nil
	}
}

func ev(user, session, msg string) contract.ConversationUpdated {
	return contract.ConversationUpdated{UserID: user, SessionID: session, EventType: "ConversationUpdated", UserMessage: msg, AssistantReply: "re: " + msg}
}

func TestProfileDefaultsAndInitialize(t *testing.T) {
	t.Parallel()
	m := New(statetest.New(), Config{}, testkit.Quiet())
	ctx := t.Context()
	p, err := m.Profile(ctx, "ana")
	if err != nil || p != contract.DefaultProfile("ana") || p.UserSummary != "ana is a new user." {
		t.Fatalf("default = %+v, %v", p, err)
	}
	tests := []struct {
		in, want contract.Profile
	}{
		{contract.Profile{Name: "Ana", PreferredStyle: "formal", UserSummary: "likes Go"}, contract.Profile{Name: "Ana", PreferredStyle: "formal", UserSummary: "likes Go"}},
		{contract.Profile{Name: "Ana"}, contract.Profile{Name: "Ana", PreferredStyle: "casual", UserSummary: "ana is a new user."}},
	}
	for _, tt := range tests {
		got, err := m.Initialize(ctx, "ana", tt.in)
		if err != nil || got != tt.want {
			t.Fatalf("Initialize(%+v) = %+v, %v", tt.in, got, err)
		}
		if p, _ := m.Profile(ctx, "ana"); p != tt.want {
			t.Fatalf("read back %+v", p)
		}
	}
}

func TestApplyConcurrentNoLostUpdates(t *testing.T) {
	t.Parallel()
	f := statetest.New()
	m := New(f, Config{}, testkit.Quiet())
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Apply(t.Context(), fmt.Sprint("ev-", i), ev("u", "s", fmt.Sprint("m", i)), fixedSummary("sum"), nil)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	h, _ := m.History(t.Context(), "s", "", 0)
	if len(h) != 100 {
		t.Fatalf("history has %d entries; want 100", len(h))
	}
	list, _ := m.Sessions(t.Context(), "u")
	if len(list) != 1 || list[0].MessageCount != 100 {
		t.Fatalf("sessions = %+v", list)
	}
}

func TestApplyOncePerEventID(t *testing.T) {
	t.Parallel()
	m := New(statetest.New(), Config{}, testkit.Quiet())
	for i, wantDup := range []bool{false, true, true} {
		res, err := m.Apply(t.Context(), "same-id", ev("u", "s", "hi"), fixedSummary("sum"), nil)
		if err != nil || res.Duplicate != wantDup {
			t.Fatalf("delivery %d: %+v, %v", i, res, err)
		}
	}
	if h, _ := m.History(t.Context(), "s", "", 0); len(h) != 2 {
		t.Fatalf("history = %d entries", len(h))
	}
}

func TestHistoryCapAndLast(t *testing.T) {
	t.Parallel()
	m := New(statetest.New(), Config{HistoryCap: 6, SummaryLast: 3}, testkit.Quiet())
	var seen [][]contract.Entry
	sum := func(_ context.Context, _ contract.Profile, recent []contract.Entry) (string, contract.Usage, error) {
		seen = append(seen, recent)
		return "s", contract.Usage{}, nil
	}
	for i := range 5 {
		if _, err := m.Apply(t.Context(), fmt.Sprint(i), ev("u", "s", fmt.Sprint("m", i)), sum, nil); err != nil {
			t.Fatal(err)
		}
	}
	h, _ := m.History(t.Context(), "s", "", 0)
	if len(h) != 6 || h[0].Content != "m2" || h[5].Content != "re: m4" {
		t.Fatalf("capped history = %+v", h)
	}
	// Entries keep their numbers when older ones are dropped (m2 was the 5th).
	if h[0].Seq != 5 || h[5].Seq != 10 {
		t.Fatalf("numbers %d…%d; want 5…10", h[0].Seq, h[5].Seq)
	}
	if b, _ := m.Histories(t.Context(), []string{"s"}, 1); len(b["s"]) != 1 || b["s"][0].Seq != 10 {
		t.Fatalf("batch read: %+v", b)
	}
	if last := seen[len(seen)-1]; len(last) != 3 || last[2].Content != "re: m4" {
		t.Fatalf("summary saw %+v; want the last 3 entries", last)
	}
	if h, _ := m.History(t.Context(), "s", "", 2); len(h) != 2 || h[1].Content != "re: m4" {
		t.Fatalf("last 2 = %+v", h)
	}
	if list, _ := m.Sessions(t.Context(), "u"); len(list) != 1 || list[0].MessageCount != 6 {
		t.Fatalf("sessions = %+v; want the 6 messages the session holds", list)
	}
}

// TestRedeliveryAfterCrashBeforeIndex: the service stops after the history
// append and before the session list is updated; the event comes again. The
// list is repaired, and counts the messages once.
func TestRedeliveryAfterCrashBeforeIndex(t *testing.T) {
	t.Parallel()
	st := statetest.New()
	m := New(st, Config{MaxCASTries: 3}, testkit.Quiet())
	st.FailWritesTo("sessions:", errors.New("killed"))
	if _, err := m.Apply(t.Context(), "e1", ev("u", "s", "hi"), fixedSummary("x"), nil); apperr.CodeOf(err) != apperr.Unavailable {
		t.Fatalf("first delivery: %v; want Unavailable", err)
	}
	if h, _ := m.History(t.Context(), "s", "", 0); len(h) != 2 {
		t.Fatalf("history after the crash = %+v; want the 2 entries", h)
	}
	st.FailWritesTo("", nil)
	res, err := m.Apply(t.Context(), "e1", ev("u", "s", "hi"), fixedSummary("x"), nil)
	if err != nil || !res.Duplicate {
		t.Fatalf("redelivery = %+v, %v; want a duplicate", res, err)
	}
	list, _ := m.Sessions(t.Context(), "u")
	if len(list) != 1 || list[0].MessageCount != 2 || list[0].LastMessage == nil || list[0].LastMessage.Content != "re: hi" {
		t.Fatalf("sessions after the redelivery = %+v; want 2 messages, last \"re: hi\"", list)
	}
	if _, err := m.Apply(t.Context(), "e2", ev("u", "s", "again"), fixedSummary("x"), nil); err != nil {
		t.Fatal(err)
	}
	if list, _ := m.Sessions(t.Context(), "u"); list[0].MessageCount != 4 || list[0].LastMessage.Content != "re: again" {
		t.Fatalf("sessions = %+v; want 4 messages", list)
	}
}

func TestApplyFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		setup    func(*statetest.State)
		sum      Summarizer
		wantCode apperr.Code
	}{
		{"LLM down: nothing written", nil, func(context.Context, contract.Profile, []contract.Entry) (string, contract.Usage, error) {
			return "", contract.Usage{}, apperr.New(apperr.Unavailable, "llm down")
		}, apperr.Unavailable},
		{"state store down", func(f *statetest.State) { f.FailReads(errors.New("connection refused")) }, fixedSummary("x"), apperr.Unavailable},
		{"writes keep failing", func(f *statetest.State) { f.FailWrites(errors.New("boom")) }, fixedSummary("x"), apperr.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := statetest.New()
			if tt.setup != nil {
				tt.setup(f)
			}
			m := New(f, Config{MaxCASTries: 5}, testkit.Quiet())
			_, err := m.Apply(t.Context(), "id", ev("u", "s", "hi"), tt.sum, nil)
			if apperr.CodeOf(err) != tt.wantCode {
				t.Fatalf("err = %v; want %s", err, tt.wantCode)
			}
			if f.Writes() != 0 {
				t.Fatalf("%d writes after a failure", f.Writes())
			}
		})
	}
}

func TestForgetAndDelete(t *testing.T) {
	t.Parallel()
	f := statetest.New()
	m := New(f, Config{}, testkit.Quiet())
	ctx := t.Context()
	m.Initialize(ctx, "u", contract.Profile{Name: "U"})
	for _, s := range []string{"a", "b"} {
		if _, err := m.Apply(ctx, s, ev("u", s, "x"), fixedSummary("sum"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := m.DeleteConversation(ctx, "a"); !ok || err != nil {
		t.Fatalf("delete a: %v %v", ok, err)
	}
	if ok, _ := m.DeleteConversation(ctx, "a"); ok {
		t.Fatal("deleted twice")
	}
	if l, _ := m.Sessions(ctx, "u"); len(l) != 1 || l[0].SessionID != "b" {
		t.Fatalf("sessions = %+v", l)
	}
	if n, err := m.ForgetUser(ctx, "u"); n != 1 || err != nil {
		t.Fatalf("forget = %d, %v", n, err)
	}
	if f.Len() != 0 {
		t.Fatalf("%d keys left behind", f.Len())
	}
}

func TestHistoriesOneRead(t *testing.T) {
	t.Parallel()
	st := statetest.New()
	m := New(st, Config{}, testkit.Quiet())
	for i, s := range []string{"a", "a", "b"} {
		if _, err := m.Apply(t.Context(), fmt.Sprint(i), ev("u", s, fmt.Sprint("m", i)), fixedSummary("s"), nil); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		ids  []string
		last int
		want map[string]int // entries per session
		code apperr.Code
	}{
		{"none", nil, 0, map[string]int{}, ""},
		{"all", []string{"a", "b", "gone"}, 0, map[string]int{"a": 4, "b": 2, "gone": 0}, ""},
		{"last", []string{"a", "b"}, 1, map[string]int{"a": 1, "b": 1}, ""},
		{"duplicates", []string{"b", "b"}, 0, map[string]int{"b": 2}, ""},
		{"too many", make([]string, contract.MaxBatch+1), 0, nil, apperr.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := st.BulkGets()
			got, err := m.Histories(t.Context(), tt.ids, tt.last)
			if apperr.CodeOf(err) != tt.code {
				t.Fatalf("err = %v; want code %q", err, tt.code)
			}
			if tt.code != "" {
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d sessions %v; want %v", len(got), got, tt.want)
			}
			for id, n := range tt.want {
				if h, ok := got[id]; !ok || h == nil || len(h) != n {
					t.Fatalf("%s: %v; want %d entries", id, h, n)
				}
			}
			if reads := st.BulkGets() - before; len(tt.ids) > 0 && reads != 1 {
				t.Fatalf("%d bulk reads; want 1", reads)
			}
		})
	}
	if h, _ := m.Histories(t.Context(), []string{"a"}, 1); h["a"][0].Content != "re: m1" {
		t.Fatalf("last entry = %+v", h["a"])
	}
	st.FailReads(errors.New("redis down"))
	if _, err := m.Histories(t.Context(), []string{"a"}, 0); apperr.CodeOf(err) != apperr.Unavailable {
		t.Fatalf("outage: %v; want Unavailable", err)
	}
}

// TestSessionOwner: a session belongs to the user who started it, recorded
// once and never changed; another user's claim and events are refused and
// change nothing.
func TestSessionOwner(t *testing.T) {
	t.Parallel()
	m := New(statetest.New(), Config{}, testkit.Quiet())
	ctx := t.Context()
	steps := []struct {
		name      string
		do        func() error
		wantCode  apperr.Code
		wantOwner string
		wantLen   int
	}{
		{"nobody owns a new session", func() error { return nil }, "", "", 0},
		{"ana claims it", func() error { return m.Claim(ctx, "s1", "ana") }, "", "ana", 0},
		{"ana claims it again", func() error { return m.Claim(ctx, "s1", "ana") }, "", "ana", 0},
		{"bob may not claim it", func() error { return m.Claim(ctx, "s1", "bob") }, apperr.Forbidden, "ana", 0},
		{"ana's turn is applied", func() error { _, err := m.Apply(ctx, "e1", ev("ana", "s1", "hi"), fixedSummary("x"), nil); return err }, "", "ana", 2},
		{"bob's event is refused", func() error {
			_, err := m.Apply(ctx, "e2", ev("bob", "s1", "mine now"), fixedSummary("x"), nil)
			return err
		},
			apperr.Forbidden, "ana", 2},
		{"an unclaimed session goes to the first event's user", func() error {
			_, err := m.Apply(ctx, "e3", ev("bob", "s2", "hello"), fixedSummary("x"), nil)
			return err
		}, "", "ana", 2},
	}
	for _, st := range steps {
		err := st.do()
		if apperr.CodeOf(err) != st.wantCode && !(st.wantCode == "" && err == nil) {
			t.Fatalf("%s: %v; want code %q", st.name, err, st.wantCode)
		}
		owner, err := m.Owner(ctx, "s1")
		if err != nil || owner != st.wantOwner {
			t.Fatalf("%s: owner %q (%v); want %q", st.name, owner, err, st.wantOwner)
		}
		if h, _ := m.History(ctx, "s1", "", 0); len(h) != st.wantLen {
			t.Fatalf("%s: %d history entries; want %d", st.name, len(h), st.wantLen)
		}
	}
	if owner, _ := m.Owner(ctx, "s2"); owner != "bob" {
		t.Fatalf("s2 owner %q; want bob", owner)
	}
	if list, _ := m.Sessions(ctx, "bob"); len(list) != 1 || list[0].SessionID != "s2" {
		t.Fatalf("bob's sessions %+v; want only s2 (never ana's s1)", list)
	}
	// Read for a user (chat-service's context): only the owner's own.
	for _, c := range []struct {
		user string
		want int
	}{{"ana", 2}, {"bob", 0}, {"", 2}} {
		if h, err := m.History(ctx, "s1", c.user, 0); err != nil || h == nil || len(h) != c.want {
			t.Fatalf("s1's history read for %q: %d entries (%v); want %d", c.user, len(h), err, c.want)
		}
	}
}

// TestSummaryJob: the user's summary job is scheduled by the first turn
// that waits for a summary, before that turn is counted (a scheduler that
// fails leaves the event unapplied, to be delivered again); later turns and
// a redelivered event do not schedule it again while it is set to fire; a
// job that fires before the turns have paused moves itself; turns that come
// while the model writes the summary get a job of their own.
func TestSummaryJob(t *testing.T) {
	t.Parallel()
	c := newFakeJobs(true)
	clock, wait, later, scheduled := c.now, c.wait, c.later, c.scheduled
	failing := func(f bool) { c.mu.Lock(); c.failing = f; c.mu.Unlock() }
	m := New(statetest.New(), Config{SummaryEvery: 10, SummaryDebounce: time.Second, Now: clock}, testkit.Quiet())
	ctx := t.Context()

	if _, err := m.Apply(ctx, "e1", ev("u", "s", "one"), fixedSummary("x"), later); apperr.CodeOf(err) != apperr.Unavailable {
		t.Fatalf("apply with the scheduler down: %v; want Unavailable", err)
	}
	if h, _ := m.History(ctx, "s", "", 0); len(h) != 0 {
		t.Fatalf("history %v; want nothing applied", h)
	}
	failing(false)
	for _, id := range []string{"e1", "e2", "e1"} { // e1 again: a redelivery
		if _, err := m.Apply(ctx, id, ev("u", "s", id), fixedSummary("x"), later); err != nil {
			t.Fatal(err)
		}
	}
	if got := scheduled(); !slices.Equal(got, []time.Duration{time.Second}) {
		t.Fatalf("jobs %v; want one, due in 1s", got)
	}
	wait(400 * time.Millisecond)
	if _, _, done, err := m.Summarize(ctx, "u", fixedSummary("early"), later); err != nil || done {
		t.Fatalf("a job before the pause: done %v (%v); want it moved", done, err)
	}
	if got := scheduled(); len(got) != 2 || got[1] != 600*time.Millisecond {
		t.Fatalf("jobs %v; want the second due at the pause's end (600ms)", got)
	}
	wait(time.Second)
	meanwhile := func(ctx context.Context, _ contract.Profile, recent []contract.Entry) (string, contract.Usage, error) {
		if _, err := m.Apply(ctx, "e3", ev("u", "s", "three"), fixedSummary("x"), later); err != nil {
			return "", contract.Usage{}, err
		}
		return fmt.Sprintf("summary of %d entries", len(recent)), contract.Usage{}, nil
	}
	summary, session, done, err := m.Summarize(ctx, "u", meanwhile, later)
	if err != nil || !done || session != "s" || summary != "summary of 4 entries" {
		t.Fatalf("the job after the pause: %q %q %v %v", summary, session, done, err)
	}
	if got := scheduled(); len(got) != 3 || got[2] != time.Second {
		t.Fatalf("jobs %v; want a third for the turn applied while the model wrote", got)
	}
	if p, _ := m.Profile(ctx, "u"); p.UserSummary != "summary of 4 entries" {
		t.Fatalf("summary %q", p.UserSummary)
	}
}

// TestUsage: every turn's event counts once (a redelivery does not count
// again), with its tool calls; every summary call counts (each was
// billed); Usage adds the days from since's on.
func TestUsage(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2026, 12, 5, 23, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	m := New(statetest.New(), Config{SummaryEvery: 2, Now: clock}, testkit.Quiet())
	ctx := t.Context()
	turn := func(id string) contract.ConversationUpdated {
		e := ev("u", "s", id)
		e.Usage = &contract.Usage{PromptTokens: 100, CompletionTokens: 20, LLMCalls: 2}
		e.ToolCalls = []contract.ToolCall{{Name: "t"}}
		return e
	}
	for _, id := range []string{"e1", "e1", "e2"} { // e2 is the second turn: summarized (10 + 2 tokens, one call)
		if _, err := m.Apply(ctx, id, turn(id), fixedSummary("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	now = now.Add(2 * time.Hour) // the next UTC day
	mu.Unlock()
	if _, err := m.Apply(ctx, "e3", turn("e3"), fixedSummary("x"), nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		since time.Time
		want  contract.UsageReply
	}{
		{time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC), contract.UsageReply{TokensIn: 310, TokensOut: 62, LLMCalls: 7, Turns: 3, ToolCalls: 3}},
		{time.Date(2026, 12, 6, 0, 30, 0, 0, time.UTC), contract.UsageReply{TokensIn: 100, TokensOut: 20, LLMCalls: 2, Turns: 1, ToolCalls: 1}},
		{time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC), contract.UsageReply{}},
	}
	for _, tt := range tests {
		got, err := m.Usage(ctx, "u", tt.since)
		tt.want.UserID, tt.want.Since = "u", tt.since.Truncate(24*time.Hour)
		if err != nil || got != tt.want {
			t.Errorf("since %v: %+v (%v); want %+v", tt.since, got, err, tt.want)
		}
	}
}

// TestRetriedIsToldOfEveryWriteMadeAgain: a compare-and-swap that lost to
// another writer is made again, and Retried hears of it with the kind of
// document.
func TestRetriedIsToldOfEveryWriteMadeAgain(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var retried []string
	m := New(statetest.New(), Config{Retried: func(doc string) { mu.Lock(); retried = append(retried, doc); mu.Unlock() }}, testkit.Quiet())
	ctx := t.Context()
	if _, err := m.Initialize(ctx, "ana", contract.Profile{Name: "Ana"}); err != nil {
		t.Fatal(err)
	}
	var u userDoc
	etag, found, err := m.get(ctx, userKey("ana"), &u)
	if err != nil || !found {
		t.Fatal(found, err)
	}
	if _, err := m.Initialize(ctx, "ana", contract.Profile{Name: "Ana B"}); err != nil { // another writer, after the read
		t.Fatal(err)
	}
	if err := m.updateRead(ctx, userKey("ana"), &u, &read{etag: etag, found: true}, func(bool) error {
		u.PreferredStyle = "formal"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(retried, []string{"user"}) {
		t.Fatalf("Retried heard %q; want one user write made again", retried)
	}
	if p, _ := m.Profile(ctx, "ana"); p.Name != "Ana B" || p.PreferredStyle != "formal" {
		t.Fatalf("profile %+v; want the other writer's name and this change", p)
	}
}

// TestSummaryWaitsForTheTurnInTheHistory: a crash between Apply's two
// writes leaves a turn counted but not in the history (until the event is
// delivered again): the summary job waits for it, a pause at a time, and
// is made with it once it is there; past appendWait it is made anyway.
func TestSummaryWaitsForTheTurnInTheHistory(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		redeliver bool // the event comes again before appendWait
	}{{"redelivered", true}, {"never again", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newFakeJobs(false)
			clock, wait, later := c.now, c.wait, c.later
			m := New(statetest.New(), Config{SummaryEvery: 10, SummaryDebounce: time.Second, Now: clock}, testkit.Quiet())
			ctx := t.Context()
			if _, err := m.Apply(ctx, "e1", ev("u", "s", "one"), fixedSummary("x"), later); err != nil {
				t.Fatal(err)
			}
			// e2 counted, its append lost with the crash.
			var u userDoc
			if err := m.update(ctx, userKey("u"), &u, func(bool) error {
				u.Counted, u.PendingTurns, u.LastTurnAt = append(u.Counted, "e2"), u.PendingTurns+1, clock()
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			wait(2 * time.Second)
			count := func(_ context.Context, _ contract.Profile, recent []contract.Entry) (string, contract.Usage, error) {
				return fmt.Sprintf("summary of %d entries", len(recent)), contract.Usage{}, nil
			}
			if _, _, done, err := m.Summarize(ctx, "u", count, later); err != nil || done {
				t.Fatalf("a summary without the turn counted last: done %v (%v); want it to wait", done, err)
			}
			if jobs := c.scheduled(); len(jobs) != 2 || jobs[1] != time.Second {
				t.Fatalf("jobs %v; want the job moved a pause on", jobs)
			}
			want := "summary of 2 entries" // made anyway, from what is there
			if tc.redeliver {
				if _, err := m.Apply(ctx, "e2", ev("u", "s", "two"), fixedSummary("x"), later); err != nil {
					t.Fatal(err)
				}
				wait(2 * time.Second)
				want = "summary of 4 entries"
			} else {
				wait(appendWait)
			}
			summary, _, done, err := m.Summarize(ctx, "u", count, later)
			if err != nil || !done || summary != want {
				t.Fatalf("summary %q, done %v (%v); want %q", summary, done, err, want)
			}
		})
	}
}

// fakeJobs is a clock the test moves and a summary job scheduler that
// records when each job was set to fire (or fails, while failing).
type fakeJobs struct {
	mu      sync.Mutex
	at      time.Time
	jobs    []time.Duration
	failing bool
}

func newFakeJobs(failing bool) *fakeJobs {
	return &fakeJobs{at: time.Date(2026, 12, 6, 1, 0, 0, 0, time.UTC), failing: failing}
}

func (f *fakeJobs) now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.at }

func (f *fakeJobs) wait(d time.Duration) { f.mu.Lock(); defer f.mu.Unlock(); f.at = f.at.Add(d) }

func (f *fakeJobs) later(_ context.Context, after time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing {
		return errors.New("scheduler unavailable")
	}
	f.jobs = append(f.jobs, after)
	return nil
}

func (f *fakeJobs) scheduled() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.jobs)
}

// TestTurnsAtOnceShareASummary: SummaryEvery turns of a user applied at
// once pay for one summary between them: the turn whose count reaches it
// claims it, and the model writes one summary at a time, never one per
// turn; every turn is still counted once.
func TestTurnsAtOnceShareASummary(t *testing.T) {
	t.Parallel()
	const clients, each, every = 16, 20, 5
	m := New(statetest.New(), Config{SummaryEvery: every}, testkit.Quiet())
	var mu sync.Mutex
	calls, writing, most := 0, 0, 0
	summarize := func(context.Context, contract.Profile, []contract.Entry) (string, contract.Usage, error) {
		mu.Lock()
		calls++
		writing++
		most = max(most, writing)
		mu.Unlock()
		time.Sleep(2 * time.Millisecond) // the model writes
		mu.Lock()
		writing--
		mu.Unlock()
		return "sum", contract.Usage{LLMCalls: 1}, nil
	}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range each {
				if _, err := m.Apply(t.Context(), fmt.Sprintf("e%d-%d", c, i), ev("ana", fmt.Sprintf("s%d", c), "hi"), summarize, nil); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if calls == 0 || calls > clients*each/every || most != 1 {
		t.Fatalf("%d summaries for %d turns, %d written at once; want between 1 and %d, one at a time", calls, clients*each, most, clients*each/every)
	}
	use, err := m.Usage(t.Context(), "ana", time.Now().Add(-time.Hour))
	if err != nil || use.Turns != clients*each || use.LLMCalls != calls {
		t.Fatalf("usage %+v (%v); want %d turns and the %d summary calls", use, err, clients*each, calls)
	}
}

// TestASummaryClaimOutlivesItsFailure: the turn that claims the summary
// keeps the claim when the model fails (the event is delivered again and
// makes it); another turn does not make it meanwhile, unless the claim is
// older than claimTTL.
func TestASummaryClaimOutlivesItsFailure(t *testing.T) {
	t.Parallel()
	clock := newFakeJobs(false)
	m := New(statetest.New(), Config{SummaryEvery: 2, Now: clock.now}, testkit.Quiet())
	ctx := t.Context()
	calls := 0
	summarizer := func(fail bool) Summarizer {
		return func(_ context.Context, _ contract.Profile, recent []contract.Entry) (string, contract.Usage, error) {
			calls++
			if fail {
				return "", contract.Usage{}, apperr.New(apperr.Unavailable, "the model is down")
			}
			return fmt.Sprintf("summary of %d entries", len(recent)), contract.Usage{}, nil
		}
	}
	apply := func(id string, fail bool) (Result, error) {
		return m.Apply(ctx, id, ev("ana", "s", id), summarizer(fail), nil)
	}
	claim := func() string {
		var u userDoc
		if _, _, err := m.get(ctx, userKey("ana"), &u); err != nil {
			t.Fatal(err)
		}
		return u.SummaryClaim
	}
	if r, err := apply("e1", false); err != nil || r.Summarized || calls != 0 {
		t.Fatalf("e1: %+v, %v, %d calls; want it counted only", r, err, calls)
	}
	if _, err := apply("e2", true); apperr.CodeOf(err) != apperr.Unavailable || calls != 1 || claim() != "e2" {
		t.Fatalf("e2, the model down: %v, %d calls, claim %q; want Unavailable and the claim kept", err, calls, claim())
	}
	if r, err := apply("e3", false); err != nil || r.Summarized || calls != 1 {
		t.Fatalf("e3 while e2 holds the claim: %+v, %v, %d calls; want no summary", r, err, calls)
	}
	r, err := apply("e2", false) // delivered again
	if err != nil || !r.Summarized || r.UserSummary != "summary of 6 entries" || claim() != "" {
		t.Fatalf("e2 again: %+v, %v, claim %q; want its summary made and the claim released", r, err, claim())
	}
	// A claim whose turn never comes back is anyone's after claimTTL.
	if _, err := apply("e4", false); err != nil {
		t.Fatal(err)
	}
	if _, err := apply("e5", true); err == nil || claim() != "e5" {
		t.Fatalf("e5: %v, claim %q", err, claim())
	}
	if r, err := apply("e6", false); err != nil || r.Summarized {
		t.Fatalf("e6 within claimTTL: %+v, %v", r, err)
	}
	clock.wait(claimTTL + time.Second)
	if r, err := apply("e7", false); err != nil || !r.Summarized || claim() != "" {
		t.Fatalf("e7 past claimTTL: %+v, %v, claim %q; want it to make the summary", r, err, claim())
	}
}
