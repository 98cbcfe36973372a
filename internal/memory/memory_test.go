package memory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/apperr"
)

// fakeState behaves like Dapr's Redis state store with first-write-wins:
// a write succeeds only with the key's current ETag ("" when absent).
type fakeState struct {
	mu      sync.Mutex
	data    map[string][]byte
	ver     map[string]int
	fail    error
	writes  int
	getFail error
}

func newFake() *fakeState { return &fakeState{data: map[string][]byte{}, ver: map[string]int{}} }

func (f *fakeState) GetState(_ context.Context, _, key string, _ map[string]string) (*dapr.StateItem, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.getFail != nil {
		return nil, f.getFail
	}
	item := &dapr.StateItem{Key: key, Value: f.data[key]}
	if v, ok := f.ver[key]; ok {
		item.Etag = strconv.Itoa(v)
	}
	return item, nil
}

func (f *fakeState) SaveStateWithETag(_ context.Context, _, key string, data []byte, etag string, _ map[string]string, _ ...dapr.StateOption) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	cur, exists := f.ver[key]
	if (exists && etag != strconv.Itoa(cur)) || (!exists && etag != "") {
		return errors.New("possible etag mismatch")
	}
	f.ver[key] = cur + 1
	f.data[key] = append([]byte(nil), data...)
	f.writes++
	return nil
}

func (f *fakeState) DeleteStateWithETag(_ context.Context, _, key string, _ *dapr.ETag, _ map[string]string, _ *dapr.StateOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.data, key)
	delete(f.ver, key)
	return nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func fixedSummary(s string) Summarizer {
	return func(context.Context, Profile, []Entry) (string, error) { return s, nil }
}

func ev(user, session, msg string) Event {
	return Event{UserID: user, SessionID: session, EventType: "ConversationUpdated", UserMessage: msg, AssistantReply: "re: " + msg}
}

func TestProfileDefaultsAndInitialize(t *testing.T) {
	m := New(newFake(), Config{}, quiet())
	ctx := t.Context()
	p, err := m.Profile(ctx, "ana")
	if err != nil || p != DefaultProfile("ana") || p.UserSummary != "ana is a new user." {
		t.Fatalf("default = %+v, %v", p, err)
	}
	tests := []struct {
		in, want Profile
	}{
		{Profile{Name: "Ana", PreferredStyle: "formal", UserSummary: "likes Go"}, Profile{"Ana", "formal", "likes Go"}},
		{Profile{Name: "Ana"}, Profile{"Ana", "casual", "ana is a new user."}},
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
	f := newFake()
	m := New(f, Config{}, quiet())
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Apply(t.Context(), fmt.Sprint("ev-", i), ev("u", "s", fmt.Sprint("m", i)), fixedSummary("sum"))
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
	h, _ := m.History(t.Context(), "s", 0)
	if len(h) != 100 {
		t.Fatalf("history has %d entries; want 100", len(h))
	}
	list, _ := m.Sessions(t.Context(), "u")
	if len(list) != 1 || list[0].MessageCount != 100 {
		t.Fatalf("sessions = %+v", list)
	}
}

func TestApplyOncePerEventID(t *testing.T) {
	m := New(newFake(), Config{}, quiet())
	for i, wantDup := range []bool{false, true, true} {
		res, err := m.Apply(t.Context(), "same-id", ev("u", "s", "hi"), fixedSummary("sum"))
		if err != nil || res.Duplicate != wantDup {
			t.Fatalf("delivery %d: %+v, %v", i, res, err)
		}
	}
	if h, _ := m.History(t.Context(), "s", 0); len(h) != 2 {
		t.Fatalf("history = %d entries", len(h))
	}
}

func TestHistoryCapAndLast(t *testing.T) {
	m := New(newFake(), Config{HistoryCap: 6, SummaryLast: 3}, quiet())
	var seen [][]Entry
	sum := func(_ context.Context, _ Profile, recent []Entry) (string, error) {
		seen = append(seen, recent)
		return "s", nil
	}
	for i := range 5 {
		if _, err := m.Apply(t.Context(), fmt.Sprint(i), ev("u", "s", fmt.Sprint("m", i)), sum); err != nil {
			t.Fatal(err)
		}
	}
	h, _ := m.History(t.Context(), "s", 0)
	if len(h) != 6 || h[0].Content != "m2" || h[5].Content != "re: m4" {
		t.Fatalf("capped history = %+v", h)
	}
	if last := seen[len(seen)-1]; len(last) != 3 || last[2].Content != "re: m4" {
		t.Fatalf("summary saw %+v; want the last 3 entries", last)
	}
	if h, _ := m.History(t.Context(), "s", 2); len(h) != 2 || h[1].Content != "re: m4" {
		t.Fatalf("last 2 = %+v", h)
	}
}

func TestApplyFailures(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(*fakeState)
		sum      Summarizer
		wantCode apperr.Code
	}{
		{"LLM down: nothing written", nil, func(context.Context, Profile, []Entry) (string, error) {
			return "", apperr.New(apperr.Unavailable, "llm down")
		}, apperr.Unavailable},
		{"state store down", func(f *fakeState) { f.getFail = errors.New("connection refused") }, fixedSummary("x"), apperr.Unavailable},
		{"writes keep failing", func(f *fakeState) { f.fail = errors.New("boom") }, fixedSummary("x"), apperr.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			if tt.setup != nil {
				tt.setup(f)
			}
			m := New(f, Config{MaxCASTries: 5}, quiet())
			_, err := m.Apply(t.Context(), "id", ev("u", "s", "hi"), tt.sum)
			if apperr.CodeOf(err) != tt.wantCode {
				t.Fatalf("err = %v; want %s", err, tt.wantCode)
			}
			if f.writes != 0 {
				t.Fatalf("%d writes after a failure", f.writes)
			}
		})
	}
}

func TestForgetAndDelete(t *testing.T) {
	f := newFake()
	m := New(f, Config{}, quiet())
	ctx := t.Context()
	m.Initialize(ctx, "u", Profile{Name: "U"})
	for _, s := range []string{"a", "b"} {
		if _, err := m.Apply(ctx, s, ev("u", s, "x"), fixedSummary("sum")); err != nil {
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
	if len(f.data) != 0 {
		t.Fatalf("left behind: %v", f.data)
	}
}
