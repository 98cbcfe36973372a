package session

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/go-chi/chi/v5"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/httpx"
)

// Dapr's actor protocol over HTTP: what chat-service's sidecar calls.
const (
	pathConfig = "/dapr/config"
	pathActor  = "/actors/" + contract.SessionActor + "/{id}"
)

// Config answers GET /dapr/config: the actor type chat-service hosts.
// Mount it where it answers before the service is ready (the sidecar reads
// it when it first reaches the app).
func Config(r chi.Router) {
	r.Get(pathConfig, func(w http.ResponseWriter, _ *http.Request) {
		// A short drain: when placement restarts, the sidecar waits for
		// the actor calls in flight before it takes the new table, and an
		// accept in flight waits for the workflow engine's actors, which
		// wait for that table: the wait ends only at this timeout (at 30 s
		// the fault suite's placement row took 24 s to recover).
		httpx.JSON(w, http.StatusOK, map[string]any{
			"entities":                []string{contract.SessionActor},
			"actorIdleTimeout":        "30m",
			"drainOngoingCallTimeout": "2s",
			"drainRebalancedActors":   true,
		})
	})
}

// Mount adds the actor's method (and reminder) calls and its deactivation.
func (a *Actor) Mount(r chi.Router, log *slog.Logger) {
	r.Put(pathActor+"/method/*", httpx.Handle(log, func(w http.ResponseWriter, r *http.Request) error {
		session, err := httpx.PathID(r, "id")
		if err != nil {
			return err
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			return apperr.Wrap(apperr.Invalid, err, "unreadable body")
		}
		out, err := a.Call(r.Context(), session, chi.URLParam(r, "*"), body)
		if err != nil {
			return err
		}
		httpx.JSON(w, http.StatusOK, out)
		return nil
	}))
	r.Delete(pathActor, func(w http.ResponseWriter, r *http.Request) { // deactivated: it may run elsewhere next
		a.Forget(chi.URLParam(r, "id"))
		w.WriteHeader(http.StatusOK)
	})
}

// Invoker calls an actor through the sidecar.
type Invoker interface {
	InvokeActor(ctx context.Context, in *dapr.InvokeActorRequest) (*dapr.InvokeActorResponse, error)
}

// Client calls the session actors (through chat-service's own sidecar,
// whichever replica hosts the actor).
type Client struct {
	Invoker Invoker
	// State keeps each turn's Accept for the actor to read (RequestKey).
	State interface {
		SaveState(ctx context.Context, storeName, key string, data []byte, meta map[string]string, so ...dapr.StateOption) error
	}
}

// A session actor's call is made at most actorAttempts times, the pause
// growing by actorPause each time.
const (
	actorAttempts = 3
	actorPause    = 500 * time.Millisecond
)

func (c Client) call(ctx context.Context, session, method string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	// Every method of the actor may be repeated (a repeated accept, done or
	// drop changes nothing): a call that failed because the actor's host
	// was stopping or starting (its actors move) is made again, a few times.
	var res *dapr.InvokeActorResponse
	for attempt := 1; ; attempt++ {
		res, err = c.Invoker.InvokeActor(ctx, &dapr.InvokeActorRequest{ActorType: contract.SessionActor, ActorID: session, Method: method, Data: b})
		if err == nil || attempt == actorAttempts || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(actorPause * time.Duration(attempt)):
		}
	}
	if err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "the session's actor is unavailable")
	}
	if out == nil || res == nil || len(res.Data) == 0 {
		return nil
	}
	return json.Unmarshal(res.Data, out)
}

// Accept hands a turn to its session: started, queued, or refused.
func (c Client) Accept(ctx context.Context, req Accept) (Accepted, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return Accepted{}, err
	}
	if err := c.State.SaveState(ctx, contract.StateStore, RequestKey(req.InstanceID), b, map[string]string{"ttlInSeconds": requestTTL}); err != nil {
		return Accepted{}, apperr.Wrap(apperr.Unavailable, err, "the state store is unavailable")
	}
	var out Accepted
	err = c.call(ctx, req.Input.SessionID, MethodAccept, req.InstanceID, &out)
	return out, err
}

// Done says the turn id of session has ended: the next waiting one starts.
func (c Client) Done(ctx context.Context, session, id string) error {
	return c.call(ctx, session, MethodDone, id, nil)
}

// Drop takes a waiting turn off its session's queue; it reports whether
// the turn was waiting.
func (c Client) Drop(ctx context.Context, session, id string) (bool, error) {
	var dropped bool
	err := c.call(ctx, session, MethodDrop, id, &dropped)
	return dropped, err
}
