package backend

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/daca-go/daca/graph"
	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/daprc"
)

// appAnswered is the error Dapr's gRPC invocation returns when the app
// answered with an HTTP error: the status and body in an ErrorInfo.
func appAnswered(code, body string) error {
	st, _ := status.New(codes.Unknown, "error invoking app").WithDetails(&errdetails.ErrorInfo{
		Reason: "DAPR_INVOKE", Metadata: map[string]string{"http.code": code, "http.error_message": body}})
	return st.Err()
}

func TestInvokeError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		err      error
		ctxErr   error
		wantCode apperr.Code
		wantMsg  string
	}{
		{"our deadline", status.Error(codes.DeadlineExceeded, "deadline"), context.DeadlineExceeded, apperr.Timeout, "chat-service did not answer in time"},
		{"not a gRPC status", errors.New("dial tcp 127.0.0.1:50001: connection refused"), nil, apperr.Unavailable, "chat-service is unavailable"},
		{"the app's 400 with its detail", appAnswered("400", `{"detail":"Message text cannot be empty"}`), nil, apperr.Invalid, "Message text cannot be empty"},
		{"the app's 413", appAnswered("413", `{"detail":"Message text is longer than 16384 bytes"}`), nil, apperr.TooLarge, "Message text is longer than 16384 bytes"},
		{"the app's 404 without a body", appAnswered("404", ``), nil, apperr.NotFound, "not found"},
		{"the app's 500 hides its detail", appAnswered("500", `{"detail":"stack trace at x.go:12"}`), nil, apperr.Internal, "internal error"},
		{"the app's 503", appAnswered("503", `{"detail":"the workflow engine is unavailable"}`), nil, apperr.Unavailable, "the workflow engine is unavailable"},
		{"app unreachable", status.Error(codes.Unavailable, "no healthy upstream"), nil, apperr.Unavailable, "chat-service is unavailable"},
		{"not found by Dapr", status.Error(codes.NotFound, "app id not found"), nil, apperr.NotFound, "not found"},
		{"refused by an access policy", status.Error(codes.PermissionDenied, "access control"), nil, apperr.Forbidden, "forbidden"},
		{"our own token refused", status.Error(codes.Unauthenticated, "bad token"), nil, apperr.Internal, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := invokeError(contract.ChatApp, "chat", tt.err, tt.ctxErr)
			if apperr.CodeOf(err) != tt.wantCode || apperr.MessageOf(err) != tt.wantMsg {
				t.Fatalf("%s %q; want %s %q", apperr.CodeOf(err), apperr.MessageOf(err), tt.wantCode, tt.wantMsg)
			}
			if !errors.Is(err, tt.err) {
				t.Fatal("the cause is not kept for the log")
			}
		})
	}
}

// sidecar records the calls and answers each method from a table.
type sidecar struct {
	calls   []string
	md      metadata.MD
	answers map[string]string
	errs    map[string]error
}

func (s *sidecar) InvokeMethodWithContent(ctx context.Context, app, method, verb string, c *dapr.DataContent) ([]byte, error) {
	s.md, _ = metadata.FromOutgoingContext(ctx)
	s.calls = append(s.calls, verb+" "+app+"/"+method+" "+string(c.Data))
	return s.answer(method)
}

func (s *sidecar) InvokeMethod(_ context.Context, app, method, verb string) ([]byte, error) {
	s.calls = append(s.calls, verb+" "+app+"/"+method)
	return s.answer(method)
}

func (s *sidecar) answer(method string) ([]byte, error) {
	if err := s.errs[method]; err != nil {
		return nil, err
	}
	return []byte(s.answers[method]), nil
}

func (s *sidecar) GetMetadata(context.Context) (*dapr.GetMetadataResponse, error) {
	return &dapr.GetMetadataResponse{}, nil
}

func TestClientOverGRPC(t *testing.T) {
	t.Parallel()
	sc := &sidecar{
		answers: map[string]string{
			"chat":       `{"user_id":"ana","reply":"hi","status":"COMPLETED","instance_id":"chat-1","metadata":{"session_id":"s1","timestamp":"2026-11-29T03:00:00Z"}}`,
			"chat/async": `{"instance_id":"chat-2","session_id":"s2"}`,
			"health":     `{"status":"ok","llm":"offline"}`,
		},
		errs: map[string]error{"chat/chat-x": appAnswered("404", `{"detail":"chat turn chat-x not found"}`),
			"conversations/s9": appAnswered("404", `{"detail":"session s9 not found"}`)},
	}
	c := &Client{Sidecar: GRPC{Client: sc}}
	ctx := t.Context()

	rep, err := c.SendMessage(ctx, graph.ChatInput{UserID: "ana", Text: "hello", SessionID: "s1", IdempotencyKey: "key-1"})
	if err != nil || rep.Reply != "hi" || rep.Metadata.SessionID != "s1" || rep.Status != contract.RunCompleted || rep.InstanceID != "chat-1" {
		t.Fatalf("SendMessage = %+v, %v", rep, err)
	}
	if got := sc.md.Get(strings.ToLower(contract.IdempotencyHeader)); len(got) != 1 || got[0] != "key-1" {
		t.Fatalf("Idempotency-Key metadata %v; want key-1 (Dapr hands it to the app as a header)", sc.md)
	}
	if want := `POST chat-service/chat {"user_id":"ana","text":"hello","metadata":{"session_id":"s1"}}`; sc.calls[0] != want {
		t.Fatalf("call %s; want %s", sc.calls[0], want)
	}
	run, err := c.StartChat(ctx, graph.ChatInput{UserID: "ana", Text: "hello"})
	if err != nil || run.InstanceID != "chat-2" || run.Status != contract.RunPending || run.SessionID != "s2" {
		t.Fatalf("StartChat = %+v, %v", run, err)
	}
	if r, err := c.ChatRun(ctx, "chat-x"); r != nil || err != nil {
		t.Fatalf("ChatRun of an unknown turn = %v, %v; want nil, nil", r, err)
	}
	if ok, err := c.DeleteConversation(ctx, "s9"); ok || err != nil {
		t.Fatalf("DeleteConversation of an unknown session = %v, %v; want false, nil", ok, err)
	}
	h := c.Health(ctx)
	if h.Sidecar != "ok" || h.Apps[contract.ChatApp] != "ok" || h.LLM != "offline" {
		t.Fatalf("Health = %+v", h)
	}
	if sc.calls[len(sc.calls)-1] != http.MethodGet+" "+contract.MemoryApp+"/health" {
		t.Fatalf("last call %s", sc.calls[len(sc.calls)-1])
	}
}

// fakeSidecar is the sidecar's HTTP invocation API: it records each call and
// answers as the app (or as Dapr) would.
type fakeSidecar struct {
	mu     sync.Mutex
	calls  []*http.Request
	bodies []string
}

func (f *fakeSidecar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.calls = append(f.calls, r)
	f.bodies = append(f.bodies, string(b))
	f.mu.Unlock()
	if r.Header.Get("dapr-api-token") != "tok" && r.URL.Path != "/v1.0/healthz" { // Dapr exempts its health endpoint
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"errorCode":"ERR_UNAUTHORIZED","message":"invalid api token"}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/v1.0/healthz":
		w.WriteHeader(http.StatusNoContent)
	case "/v1.0/invoke/chat-service/method/chat":
		io.WriteString(w, `{"user_id":"ana","reply":"hi","status":"COMPLETED","instance_id":"chat-1","metadata":{"session_id":"s1","timestamp":"2026-11-29T03:00:00Z"}}`)
	case "/v1.0/invoke/chat-service/method/chat/async":
		w.WriteHeader(http.StatusBadRequest) // the app's detail, longer than the 64 characters of the gRPC path
		io.WriteString(w, `{"detail":"Idempotency-Key must be 1 to 255 printable characters, and this one is not","code":"INVALID"}`)
	case "/v1.0/invoke/chat-service/method/chat/chat-x":
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"detail":"chat turn chat-x not found","code":"NOT_FOUND"}`)
	case "/v1.0/invoke/chat-service/method/chat/chat-500":
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"detail":"panic at x.go:12","code":"INTERNAL"}`)
	case "/v1.0/invoke/nobody/method/health":
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"errorCode":"ERR_DIRECT_INVOKE","message":"failed to invoke, id: nobody, err: couldn't find service: nobody"}`)
	case "/v1.0/invoke/agent-memory-service/method/health":
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"errorCode":"ERR_DIRECT_INVOKE","message":"access control policy has denied access to id: spiffe://public/ns/daca/gateway operation: health verb: GET"}`)
	default:
		http.NotFound(w, r)
	}
}

func TestClientOverHTTP(t *testing.T) {
	t.Parallel()
	f := &fakeSidecar{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	port, _ := strconv.Atoi(srv.URL[strings.LastIndex(srv.URL, ":")+1:])
	h := daprc.NewHTTP(port, "tok")
	c := &Client{Sidecar: h}
	ctx := t.Context()

	rep, err := c.SendMessage(ctx, graph.ChatInput{UserID: "ana", Text: "hello", SessionID: "s1", IdempotencyKey: "key-1"})
	if err != nil || rep.Reply != "hi" || rep.InstanceID != "chat-1" {
		t.Fatalf("SendMessage = %+v, %v", rep, err)
	}
	r := f.calls[0]
	if r.Method != http.MethodPost || r.Header.Get(contract.IdempotencyHeader) != "key-1" || r.Header.Get("Content-Type") != "application/json" ||
		f.bodies[0] != `{"user_id":"ana","text":"hello","metadata":{"session_id":"s1"}}` {
		t.Fatalf("request %s %s %v %s", r.Method, r.URL, r.Header, f.bodies[0])
	}
	if err := h.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	tests := []struct {
		name     string
		call     func() error
		wantCode apperr.Code
		wantMsg  string
	}{
		{"the app's detail whole", func() error { _, err := c.StartChat(ctx, graph.ChatInput{UserID: "ana", Text: "x"}); return err },
			apperr.Invalid, "Idempotency-Key must be 1 to 255 printable characters, and this one is not"},
		{"the app's 500 hides its detail", func() error { _, err := c.ChatRun(ctx, "chat-500"); return err }, apperr.Internal, "internal error"},
		{"Dapr could not reach the app", func() error {
			_, err := h.Call(ctx, api.Request{App: "nobody", Method: "health", Verb: http.MethodGet})
			return err
		},
			apperr.Unavailable, "nobody is unavailable"},
		{"an access policy refused the call", func() error {
			_, err := h.Call(ctx, api.Request{App: contract.MemoryApp, Method: "health", Verb: http.MethodGet})
			return err
		},
			apperr.Forbidden, "forbidden"},
		{"our token refused", func() error {
			_, err := (&Client{Sidecar: daprc.NewHTTP(port, "wrong")}).SendMessage(ctx, graph.ChatInput{UserID: "ana"})
			return err
		}, apperr.Internal, "internal error"},
		{"the sidecar is down", func() error {
			_, err := (&Client{Sidecar: daprc.NewHTTP(1, "tok")}).SendMessage(ctx, graph.ChatInput{UserID: "ana"})
			return err
		}, apperr.Unavailable, "chat-service is unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if apperr.CodeOf(err) != tt.wantCode || apperr.MessageOf(err) != tt.wantMsg {
				t.Fatalf("%s %q; want %s %q", apperr.CodeOf(err), apperr.MessageOf(err), tt.wantCode, tt.wantMsg)
			}
		})
	}
	if r, err := c.ChatRun(ctx, "chat-x"); r != nil || err != nil {
		t.Fatalf("ChatRun of an unknown turn = %v, %v; want nil, nil", r, err)
	}
	// A turn without the client's key gets one of its own, so that Dapr's
	// retry after a transport failure joins the first attempt's turn.
	for _, r := range f.calls {
		if strings.HasSuffix(r.URL.Path, "/method/chat/async") && !strings.HasPrefix(r.Header.Get(contract.IdempotencyHeader), "gateway-") {
			t.Fatalf("startChat without a key sent Idempotency-Key %q; want a generated one", r.Header.Get(contract.IdempotencyHeader))
		}
	}
}

// gate is a Sidecar whose calls wait until released, counting them.
type gate struct {
	mu      sync.Mutex
	calls   int
	release chan struct{}
}

func (g *gate) Call(ctx context.Context, r api.Request) ([]byte, error) {
	g.mu.Lock()
	g.calls++
	g.mu.Unlock()
	<-g.release
	return []byte(`{"instance_id":"chat-1","status":"RUNNING","user_id":"ana"}`), nil
}

func (g *gate) Ping(context.Context) error { return nil }

// TestChatRunReadsJoined: a hundred clients reading one turn at once make
// one call to chat-service (a thousand subscribers of one turn once made its
// workflow engine answer "unavailable"); each gets its own copy; a caller
// that goes away does not cut the call short for the others; the chatRun
// poller's read (ReadChatRun) is its own.
func TestChatRunReadsJoined(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &gate{release: make(chan struct{})}
		c := &Client{Sidecar: g}
		gone, cancel := context.WithCancel(t.Context())
		first := make(chan error, 1)
		go func() { _, err := c.ChatRun(gone, "chat-1"); first <- err }()
		var wg sync.WaitGroup
		runs := make([]*contract.ChatRun, 100)
		for i := range runs {
			wg.Add(1)
			go func() { defer wg.Done(); runs[i], _ = c.ChatRun(t.Context(), "chat-1") }()
		}
		synctest.Wait() // every reader waits for the one call
		if g.calls != 1 {
			t.Fatalf("%d calls for 101 readers; want 1", g.calls)
		}
		cancel() // the first caller goes away; the call goes on for the others
		if err := <-first; apperr.CodeOf(err) != apperr.Timeout {
			t.Fatalf("the caller that went away got %v", err)
		}
		close(g.release)
		wg.Wait()
		for i, r := range runs {
			if r == nil || r.Status != contract.RunRunning || i > 0 && r == runs[0] {
				t.Fatalf("reader %d got %+v", i, r)
			}
		}
		if _, err := c.ReadChatRun(t.Context(), "chat-1"); err != nil || g.calls != 2 {
			t.Fatalf("ReadChatRun: %v, %d calls in all; want its own", err, g.calls)
		}
	})
}
