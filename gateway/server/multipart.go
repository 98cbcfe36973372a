package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/daca-go/daca/internal/logging"
)

// multipartSubscriptions is Apollo's protocol for subscriptions over plain
// HTTP (https://www.apollographql.com/docs/graphos/routing/operations/subscriptions/multipart-protocol):
// a POST whose Accept names multipart/mixed with subscriptionSpec=1.0 is
// answered with a multipart/mixed stream, one part per event
// ({"payload": <the GraphQL response>}), an empty object ({}) as a
// heartbeat while no event comes, and a fatal error as {"payload": null,
// "errors": [...]} before the stream ends. Apollo Client's HttpLink (3.7
// and later), Apollo Kotlin and Apollo iOS speak it with no websocket link.
// A request asking for @defer (deferSpec, no subscriptionSpec) goes to
// gqlgen's MultipartMixed instead: each request gets the framing it asked
// for. The HTTP guards (CORS, CSRF, body limit, bearer token) wrap it like
// every transport.
type multipartSubscriptions struct {
	heartbeat time.Duration
	log       *slog.Logger
}

var _ graphql.Transport = multipartSubscriptions{}

// mpBoundary is the boundary of every multipart answer (Apollo's).
const mpBoundary = "graphql"

func (multipartSubscriptions) Supports(r *http.Request) bool {
	if r.Method != http.MethodPost || !acceptsMultipartSubscription(r.Header.Values("Accept")) {
		return false
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// acceptsMultipartSubscription reports whether an Accept header names
// multipart/mixed with a subscriptionSpec parameter.
func acceptsMultipartSubscription(values []string) bool {
	for _, v := range values {
		for _, r := range strings.Split(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(r))
			if err == nil && mt == "multipart/mixed" && params["subscriptionspec"] != "" {
				return true
			}
		}
	}
	return false
}

// streamSlot is a multipart stream's way for the broker to end it with a
// reason (a slow subscriber dropped: DropSlowSubscriber).
type streamSlot struct {
	once   sync.Once
	failed chan string // the reason, once
}

type streamSlotKey struct{}

func (s *streamSlot) fail(reason string) {
	s.once.Do(func() { s.failed <- reason })
}

func (t multipartSubscriptions) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	ctx := r.Context()
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	slot := &streamSlot{failed: make(chan string, 1)}
	ctx = context.WithValue(ctx, streamSlotKey{}, slot)
	params := &graphql.RawParams{}
	start := graphql.Now()
	if err := json.NewDecoder(r.Body).Decode(params); err != nil {
		// gqlgen's words, which the error presenter turns into what is
		// wrong without the body (bodyError), as for every transport
		gerr := gqlerror.Errorf("json request body could not be decoded: %v", err)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		writeResponse(w, exec.DispatchError(ctx, gqlerror.List{gerr}))
		return
	}
	params.Headers = r.Header
	params.ReadTime = graphql.TraceTiming{Start: start, End: graphql.Now()}
	rc, opErr := exec.CreateOperationContext(ctx, params)
	if opErr != nil { // before the stream: a plain JSON answer, as POST gives
		ctx = graphql.WithOperationContext(ctx, rc)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		writeResponse(w, exec.DispatchError(ctx, opErr))
		return
	}
	ctx = graphql.WithOperationContext(ctx, rc)
	w.Header().Set("Content-Type", `multipart/mixed;boundary="`+mpBoundary+`";subscriptionSpec="1.0"`)
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()

	responses, dctx := exec.DispatchOperation(ctx, rc)
	next := make(chan *graphql.Response)
	go func() {
		defer close(next)
		for {
			resp := responses(dctx)
			if resp == nil {
				return
			}
			// gqlgen writes each response of a stream into a buffer it
			// reuses for the next: this goroutine asks for the next while
			// the loop below still encodes this one, so this one is copied
			// (a data race the race detector caught in make test).
			resp.Data = bytes.Clone(resp.Data)
			select {
			case next <- resp:
			case <-dctx.Done():
				return
			}
		}
	}()
	part := func(v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			logging.From(ctx, t.log).Error("a multipart part could not be encoded", "err", err)
			return false
		}
		if _, err := fmt.Fprintf(w, "\r\n--%s\r\ncontent-type: application/json\r\n\r\n%s", mpBoundary, b); err != nil {
			return false // the client is gone
		}
		flusher.Flush()
		return true
	}
	heartbeat := time.NewTicker(t.heartbeat)
	defer heartbeat.Stop()
loop:
	for {
		select {
		case resp, ok := <-next:
			if !ok {
				select { // ended by a drop: say why
				case reason := <-slot.failed:
					part(fatal(reason))
				default:
				}
				break loop
			}
			if !part(map[string]any{"payload": resp}) {
				return
			}
			heartbeat.Reset(t.heartbeat)
		case <-heartbeat.C:
			if !part(struct{}{}) {
				return
			}
		case reason := <-slot.failed:
			part(fatal(reason))
			break loop
		case <-ctx.Done():
			return
		}
	}
	io.WriteString(w, "\r\n--"+mpBoundary+"--\r\n")
	flusher.Flush()
}

// fatal is the part that ends a stream with an error (Apollo's transport
// error: no payload).
func fatal(reason string) map[string]any {
	return map[string]any{"payload": nil, "errors": []map[string]any{{"message": reason, "extensions": map[string]any{"code": "UNAVAILABLE"}}}}
}

func writeResponse(w io.Writer, resp *graphql.Response) {
	b, _ := json.Marshal(resp)
	w.Write(b)
}
