package turn

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"github.com/dapr/durabletask-go/backend"
	"github.com/dapr/durabletask-go/backend/sqlite"
	"github.com/dapr/durabletask-go/workflow"
	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/testkit"
	"github.com/daca-go/daca/internal/llm"
)

// engine runs chat_workflow on durabletask-go's own engine in this process
// (in-memory SQLite backend, the gRPC executor daprd also serves), with the
// activities over a, and returns its client.
func engine(t *testing.T, a *Activities, extra ...func(*workflow.Registry) error) *workflow.Client {
	t.Helper()
	logger := backend.DefaultLogger()
	be := sqlite.NewSqliteBackend(sqlite.NewSqliteOptions(""), logger)
	srv := grpc.NewServer()
	exec, register := backend.NewGrpcExecutor(be, logger)
	register(srv)
	hub := backend.NewTaskHubWorker(be,
		backend.NewWorkflowWorker(backend.WorkflowWorkerOptions{Backend: be, Executor: exec, Logger: logger, AppID: "chat-test"}),
		backend.NewActivityTaskWorker(be, exec, logger), logger)
	ctx, cancel := context.WithCancel(context.Background())
	if err := hub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c := workflow.NewClient(conn)
	reg := workflow.NewRegistry()
	if err := a.Register(reg); err != nil {
		t.Fatal(err)
	}
	for _, f := range extra {
		if err := f(reg); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.StartWorker(ctx, reg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		exec.Shutdown(sctx)
		hub.Shutdown(sctx)
		conn.Close()
		srv.Stop()
	})
	return c
}

// memory answers the context of a turn in one call (or, old, in two: a
// memory service from before GET /context), or fails them all.
type memory struct {
	down    bool
	old     bool
	history []contract.Entry
	mu      sync.Mutex
	calls   []string // the routes called
}

func (m *memory) Call(_ context.Context, r api.Request) ([]byte, error) {
	if m.down {
		return nil, apperr.New(apperr.Unavailable, "connection refused")
	}
	if r.App != contract.MemoryApp || r.Verb != http.MethodGet || r.Body != nil {
		return nil, errors.New("unexpected call " + r.App + " " + r.Verb + " " + r.Method)
	}
	m.mu.Lock()
	m.calls = append(m.calls, strings.SplitN(r.Method, "/", 2)[0])
	m.mu.Unlock()
	h := m.history
	if len(h) > contract.ContextEntries {
		h = h[len(h)-contract.ContextEntries:]
	}
	switch {
	case strings.HasPrefix(r.Method, "context/") && !m.old:
		u, err := url.Parse(r.Method)
		if err != nil || u.Path != "context/ana" || u.Query().Get("session_id") != "s1" || u.Query().Get("last") != strconv.Itoa(contract.ContextEntries) {
			return nil, apperr.New(apperr.Invalid, "want user ana, session_id s1 and last")
		}
		return json.Marshal(contract.ContextReply{Profile: contract.Profile{Name: "Ana", PreferredStyle: "formal", UserSummary: "likes Go"}, History: h})
	case strings.HasPrefix(r.Method, "memories/"):
		return json.Marshal(contract.Profile{Name: "Ana", PreferredStyle: "formal", UserSummary: "likes Go"})
	case strings.HasPrefix(r.Method, "conversations/"):
		u, err := url.Parse(r.Method)
		if err != nil || u.Query().Get("user_id") != "ana" || u.Query().Get("last") != strconv.Itoa(contract.ContextEntries) {
			return nil, apperr.New(apperr.Invalid, "want last and user_id")
		}
		return json.Marshal(contract.HistoryReply{History: h})
	}
	return nil, apperr.New(apperr.NotFound, "not found")
}

// published records what the activities published: save_conversation's
// events and generate_response's pieces.
type published struct {
	mu     sync.Mutex
	events []publishedEvent
	pieces []contract.ChatStreamed
}

type publishedEvent struct {
	pubsub, topic, id string
	ev                contract.ConversationUpdated
}

func (p *published) PublishEvent(_ context.Context, pubsub, topic string, data any, opts ...dapr.PublishEventOption) error {
	req := &pb.PublishEventRequest{}
	for _, o := range opts {
		o(req)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev := data.(type) {
	case contract.ConversationUpdated:
		p.events = append(p.events, publishedEvent{pubsub, topic, req.Metadata[contract.CloudEventIDMetadata], ev})
	case contract.ChatStreamed:
		if topic != contract.TopicChatStream || pubsub != contract.StreamPubSub {
			return errors.New("a piece on " + pubsub + "/" + topic)
		}
		p.pieces = append(p.pieces, ev)
	default:
		return errors.New("unexpected event")
	}
	return nil
}

func (p *published) list() []publishedEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]publishedEvent(nil), p.events...)
}

func (p *published) streamed() []contract.ChatStreamed {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]contract.ChatStreamed(nil), p.pieces...)
}

// state is an in-memory state store with ETags.
type state struct {
	mu      sync.Mutex
	vals    map[string]string
	tags    map[string]int
	refused int // writes refused (as Dapr's state API would: after its resiliency retries)
}

func (s *state) GetState(_ context.Context, store, key string, _ map[string]string) (*dapr.StateItem, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vals[key] == "" {
		return &dapr.StateItem{Key: key}, nil
	}
	return &dapr.StateItem{Key: key, Value: []byte(s.vals[key]), Etag: strconv.Itoa(s.tags[key])}, nil
}

// SaveStateWithETag checks the ETag as Dapr does; first-write concurrency
// without an ETag writes only a key that does not exist.
func (s *state) SaveStateWithETag(_ context.Context, store, key string, data []byte, etag string, _ map[string]string, opts ...dapr.StateOption) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vals == nil {
		s.vals, s.tags = map[string]string{}, map[string]int{}
	}
	var so dapr.StateOptions
	for _, o := range opts {
		o(&so)
	}
	if etag != "" && etag != strconv.Itoa(s.tags[key]) {
		s.refused++
		return errors.New("etag mismatch")
	}
	if etag == "" && so.Concurrency == dapr.StateConcurrencyFirstWrite && s.tags[key] > 0 {
		s.refused++
		return errors.New("failed to set key: it exists")
	}
	s.vals[key] = string(data)
	s.tags[key]++
	return nil
}

// model replies "re: <text>" in two pieces and records the history it was
// given, or writes "partial " and fails.
type model struct {
	mu      sync.Mutex
	err     error
	calls   int
	history []llm.Message
	system  string
}

func (m *model) Round(_ context.Context, system string, msgs []llm.Message, _ []llm.ToolSpec, on func(string)) (llm.Answer, error) {
	m.mu.Lock()
	m.calls++
	m.history, m.system = msgs[:len(msgs)-1], system
	err := m.err
	m.mu.Unlock()
	if on == nil {
		on = func(string) {}
	}
	if err != nil {
		on("partial ")
		return llm.Answer{}, err
	}
	user := msgs[len(msgs)-1].Content
	on("re: ")
	on(user)
	return llm.Answer{Text: "re: " + user, Usage: llm.Usage{PromptTokens: len(msgs), CompletionTokens: 2}}, nil
}

func run(t *testing.T, c *workflow.Client, id string, in Input) *workflow.WorkflowMetadata {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := c.ScheduleWorkflow(ctx, WorkflowName, workflow.WithInstanceID(id), workflow.WithInput(in)); err != nil {
		t.Fatal(err)
	}
	meta, err := c.WaitForWorkflowCompletion(ctx, id, workflow.WithFetchPayloads(true))
	if err != nil {
		t.Fatal(err)
	}
	return meta
}

func TestChatWorkflow(t *testing.T) {
	ts := time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)
	long := make([]contract.Entry, contract.ContextEntries+5)
	for i := range long {
		long[i] = contract.Entry{Role: contract.RoleUser, Content: "m", Timestamp: ts}
	}
	tests := []struct {
		name       string
		mem        *memory
		llmErr     error
		wantStatus string
		wantError  string
		wantCalls  int // LLM calls
		wantEvents int
		wantHist   int // history entries that reached the prompt
	}{
		{"a turn: context, reply, one event", &memory{history: long}, nil, "COMPLETED", "", 1, 1, contract.ContextEntries},
		{"an older memory service: the context in two calls", &memory{history: long, old: true}, nil, "COMPLETED", "", 1, 1, contract.ContextEntries},
		{"memory down: the turn goes on without history", &memory{down: true}, nil, "COMPLETED", "", 1, 1, 0},
		{"the LLM fails every attempt: FAILED, nothing published", &memory{}, apperr.New(apperr.Unavailable, "LLM unavailable"),
			"FAILED", "chat turn failed while generating response", 3, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub, m, logs := &published{}, &model{err: tt.llmErr}, &syncBuffer{}
			c := engine(t, &Activities{Memory: api.Memory{Caller: tt.mem}, Publisher: pub, Model: m, State: &state{}, Log: slog.New(slog.NewJSONHandler(logs, nil))})
			in := Input{UserID: "ana", SessionID: "s1", Text: "hello"}
			meta := run(t, c, "chat-test-1", in)
			if got := meta.String(); got != tt.wantStatus {
				t.Fatalf("status %s (%v); want %s", got, meta.FailureDetails, tt.wantStatus)
			}
			if m.calls != tt.wantCalls {
				t.Errorf("LLM calls %d; want %d (generate_response's retry policy)", m.calls, tt.wantCalls)
			}
			if tt.wantCalls > 0 && tt.llmErr == nil && len(m.history) != tt.wantHist {
				t.Errorf("history in the prompt: %d entries; want %d", len(m.history), tt.wantHist)
			}
			if tt.wantStatus == "COMPLETED" && !tt.mem.down {
				if !strings.Contains(m.system, "likes Go") {
					t.Errorf("the prompt lacks the profile's summary: %q", m.system)
				}
				want := []string{"context"}
				if tt.mem.old {
					want = []string{"context", "conversations", "memories"}
				}
				tt.mem.mu.Lock()
				got := slices.Clone(tt.mem.calls)
				tt.mem.mu.Unlock()
				slices.Sort(got)
				if !slices.Equal(got, want) {
					t.Errorf("calls to the memory %v; want %v", got, want)
				}
			}
			events := pub.list()
			if len(events) != tt.wantEvents {
				t.Fatalf("published %d events; want %d", len(events), tt.wantEvents)
			}
			if tt.wantStatus == "FAILED" {
				if meta.FailureDetails == nil || meta.FailureDetails.ErrorMessage != tt.wantError {
					t.Fatalf("failure %v; want %q", meta.FailureDetails, tt.wantError)
				}
				if !strings.Contains(logs.String(), `"msg":"chat turn failed","workflow_instance_id":"chat-test-1"`) {
					t.Fatalf("handle_error did not record the failure; logs:\n%s", logs.String())
				}
				// Each execution streamed its piece in its own block.
				var seqs []int
				want := []int{1, contract.SeqBlock + 1, 2*contract.SeqBlock + 1}
				testkit.WaitUntil(t, 5*time.Second, "a piece of each execution", func() bool { return len(pub.streamed()) == len(want) })
				for _, p := range pub.streamed() {
					seqs = append(seqs, p.Seq)
				}
				slices.Sort(seqs) // each execution's pieces go out on their own
				if !slices.Equal(seqs, want) {
					t.Fatalf("pieces of the failed executions at %v; want %v", seqs, want)
				}
				return
			}
			want := contract.NewConversationUpdated("ana", "s1", "hello", "re: hello")
			if e := events[0]; e.ev.SentAt.IsZero() || time.Since(e.ev.SentAt) > time.Minute {
				t.Fatalf("SentAt %v; want the turn's time", e.ev.SentAt)
			}
			events[0].ev.SentAt = time.Time{}
			// The turn's usage: one LLM call, its tokens as the model reported them.
			if u := events[0].ev.Usage; u == nil || *u != (contract.Usage{PromptTokens: len(m.history) + 1, CompletionTokens: 2, LLMCalls: 1}) {
				t.Fatalf("usage %+v; want the model's call", u)
			}
			events[0].ev.Usage = nil
			if e := events[0]; e.pubsub != contract.PubSub || e.topic != contract.TopicConversations || e.id != "chat-test-1" || !reflect.DeepEqual(e.ev, want) {
				t.Fatalf("published %+v; want %+v on %s/%s with CloudEvent id chat-test-1", e, want, contract.PubSub, contract.TopicConversations)
			}
			// The reply was streamed (the pieces go out on their own, after
			// the activity may have returned); the pieces make up the reply.
			var pieces []contract.ChatStreamed
			testkit.WaitUntil(t, 5*time.Second, "the reply streamed", func() bool {
				pieces = pub.streamed()
				return len(pieces) > 0 && pieces[len(pieces)-1].Text == "re: hello"
			})
			if len(pieces) == 0 || pieces[0].Seq != 1 || pieces[len(pieces)-1].Text != "re: hello" || pieces[0].InstanceID != "chat-test-1" || pieces[0].UserID != "ana" {
				t.Fatalf("streamed %+v", pieces)
			}
			var joined string
			for i, p := range pieces {
				if p.Seq != i+1 || p.Execution != 1 || p.Validate() != nil {
					t.Fatalf("piece %d: %+v", i, p)
				}
				joined += p.Delta
			}
			if joined != "re: hello" {
				t.Fatalf("deltas make %q", joined)
			}
			var out Output
			if err := json.Unmarshal([]byte(meta.Output.GetValue()), &out); err != nil || out.Reply != "re: hello" || out.SessionID != "s1" {
				t.Fatalf("output %s (%v)", meta.Output.GetValue(), err)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer the activities may log to at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// activitiesOf lists the activities turn id scheduled, in order.
func activitiesOf(t *testing.T, c *workflow.Client, id string) []string {
	t.Helper()
	h, err := c.GetInstanceHistory(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range h.Events {
		if ts := e.GetTaskScheduled(); ts != nil {
			out = append(out, ts.GetName())
		}
	}
	return out
}

// flakyPublisher refuses the first n ConversationUpdated publishes.
type flakyPublisher struct {
	*published
	mu   sync.Mutex
	fail int
}

func (p *flakyPublisher) PublishEvent(ctx context.Context, pubsub, topic string, data any, opts ...dapr.PublishEventOption) error {
	if _, ok := data.(contract.ConversationUpdated); ok {
		p.mu.Lock()
		fail := p.fail > 0
		p.fail--
		p.mu.Unlock()
		if fail {
			return errors.New("broker unavailable")
		}
	}
	return p.published.PublishEvent(ctx, pubsub, topic, data, opts...)
}

// numbered answers "reply N" at its N-th call.
type numbered struct {
	mu    sync.Mutex
	calls int
}

func (m *numbered) Round(_ context.Context, _ string, _ []llm.Message, _ []llm.ToolSpec, on func(string)) (llm.Answer, error) {
	m.mu.Lock()
	m.calls++
	text := "reply " + strconv.Itoa(m.calls)
	m.mu.Unlock()
	if on != nil {
		on(text)
	}
	return llm.Answer{Text: text}, nil
}

// TestFewerSteps: under PatchFewerSteps a plain turn is one activity (its
// round fetches the context and saves the turn), and a last round run
// again after its save publishes the reply saved first, which is also the
// turn's output and result.
func TestFewerSteps(t *testing.T) {
	t.Parallel()
	t.Run("a plain turn is one activity", func(t *testing.T) {
		t.Parallel()
		pub, st := &published{}, &state{}
		c := engine(t, &Activities{Memory: api.Memory{Caller: &memory{}}, Publisher: pub, Model: &model{}, State: st, Log: slog.New(slog.DiscardHandler)})
		meta := run(t, c, "chat-one", Input{UserID: "ana", SessionID: "s1", Text: "hello"})
		if meta.String() != "COMPLETED" {
			t.Fatalf("status %s (%v)", meta.String(), meta.FailureDetails)
		}
		if got := activitiesOf(t, c, "chat-one"); !slices.Equal(got, []string{ActGenerate}) {
			t.Fatalf("activities %v; want [%s]", got, ActGenerate)
		}
		if ev := pub.list(); len(ev) != 1 || ev[0].id != "chat-one" || ev[0].ev.AssistantReply != "re: hello" {
			t.Fatalf("published %+v", ev)
		}
		r, err := readResult(t.Context(), st, "chat-one")
		if err != nil || r == nil || r.Event.AssistantReply != "re: hello" || r.Event.SessionID != "s1" {
			t.Fatalf("result %+v (%v)", r, err)
		}
		// The profile came from the memory (the round fetched it).
		var out Output
		if err := json.Unmarshal([]byte(meta.Output.GetValue()), &out); err != nil || out.Reply != "re: hello" {
			t.Fatalf("output %s (%v)", meta.Output.GetValue(), err)
		}
	})
	t.Run("the reply saved first stands", func(t *testing.T) {
		t.Parallel()
		pub, st, m := &flakyPublisher{published: &published{}, fail: 1}, &state{}, &numbered{}
		c := engine(t, &Activities{Memory: api.Memory{Caller: &memory{}}, Publisher: pub, Model: m, State: st, Log: slog.New(slog.DiscardHandler)})
		meta := run(t, c, "chat-again", Input{UserID: "ana", SessionID: "s1", Text: "hello"})
		if meta.String() != "COMPLETED" {
			t.Fatalf("status %s (%v)", meta.String(), meta.FailureDetails)
		}
		if m.calls != 2 {
			t.Fatalf("model calls %d; want 2 (the round ran again after the failed publish)", m.calls)
		}
		if ev := pub.list(); len(ev) != 1 || ev[0].ev.AssistantReply != "reply 1" {
			t.Fatalf("published %+v; want the first reply once", ev)
		}
		var out Output
		if err := json.Unmarshal([]byte(meta.Output.GetValue()), &out); err != nil || out.Reply != "reply 1" {
			t.Fatalf("output %s (%v); want the reply saved first", meta.Output.GetValue(), err)
		}
		if r, err := readResult(t.Context(), st, "chat-again"); err != nil || r == nil || r.Event.AssistantReply != "reply 1" {
			t.Fatalf("result %+v (%v)", r, err)
		}
	})
	t.Run("the turn fails while saving when it cannot be published", func(t *testing.T) {
		t.Parallel()
		pub := &flakyPublisher{published: &published{}, fail: 100}
		c := engine(t, &Activities{Memory: api.Memory{Caller: &memory{}}, Publisher: pub, Model: &model{}, State: &state{}, Log: slog.New(slog.DiscardHandler)})
		meta := run(t, c, "chat-unsaved", Input{UserID: "ana", SessionID: "s1", Text: "hello"})
		if meta.String() != "FAILED" || meta.FailureDetails == nil || meta.FailureDetails.ErrorMessage != "chat turn failed while saving conversation" {
			t.Fatalf("status %s (%v); want FAILED while saving conversation", meta.String(), meta.FailureDetails)
		}
	})
}

// gated answers "re: <text>" once released, and says when it was called.
type gated struct {
	called, release chan struct{}
}

func (m *gated) Round(_ context.Context, _ string, msgs []llm.Message, _ []llm.ToolSpec, _ func(string)) (llm.Answer, error) {
	close(m.called)
	<-m.release
	return llm.Answer{Text: "re: " + msgs[len(msgs)-1].Content}, nil
}

// TestStopBeforeSave: a turn stopped while its last round runs (the round
// runs on after the workflow is terminated) saves and publishes nothing;
// stopping a turn whose result was saved first leaves it completed.
func TestStopBeforeSave(t *testing.T) {
	t.Parallel()
	pub, st, logs := &published{}, &state{}, &syncBuffer{}
	m := &gated{called: make(chan struct{}), release: make(chan struct{})}
	c := engine(t, &Activities{Memory: api.Memory{Caller: &memory{}}, Publisher: pub, Model: m, State: st, Log: slog.New(slog.NewJSONHandler(logs, nil))})
	turns := Client{Workflows: c, State: st, Log: slog.New(slog.DiscardHandler)}
	ctx := t.Context()
	if _, err := c.ScheduleWorkflow(ctx, WorkflowName, workflow.WithInstanceID("chat-stop"), workflow.WithInput(Input{UserID: "ana", SessionID: "s1", Text: "hello"})); err != nil {
		t.Fatal(err)
	}
	<-m.called
	run, err := turns.Cancel(ctx, "chat-stop")
	if err != nil || run.Status != contract.RunTerminated {
		t.Fatalf("cancel: %+v %v; want TERMINATED", run, err)
	}
	close(m.release)
	testkit.WaitUntil(t, 10*time.Second, "the round to end", func() bool {
		return strings.Contains(logs.String(), "the turn was stopped before its reply was saved")
	})
	if ev := pub.list(); len(ev) != 0 {
		t.Fatalf("published %+v for a stopped turn", ev)
	}
	if r, err := readResult(ctx, st, "chat-stop"); err != nil || r == nil || !r.Stopped {
		t.Fatalf("result %+v (%v); want the stop recorded", r, err)
	}
	// A turn saved before its stop has completed: the stop leaves it.
	if _, err := saveResult(ctx, st, Result{ID: "chat-saved", Event: contract.NewConversationUpdated("ana", "s1", "hi", "re: hi")}, true); err != nil {
		t.Fatal(err)
	}
	if err := turns.Stop(ctx, "chat-saved"); err != nil {
		t.Fatal(err)
	}
	if r, _ := readResult(ctx, st, "chat-saved"); r == nil || r.Stopped || r.Event.AssistantReply != "re: hi" {
		t.Fatalf("result %+v; want the saved one", r)
	}
}
