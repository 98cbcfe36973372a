// Package session runs each chat session's turns one at a time, in the
// order they were accepted, across every chat-service replica: a Dapr actor
// per session (contract.SessionActor, the session id its actor id). Dapr
// places each actor on one replica and runs its calls one at a time, so
// accepting a turn — start it, queue it, refuse it or interrupt the running
// one (contract.BusyPolicy) — is decided by one party per session with no
// lock of our own; the actor's state (the running turn, the queue) is in
// the actor state store, so a queued turn survives any restart.
//
// A turn's end hands the session on: save_conversation calls done once its
// event is published (turn.Sessions), cancelChat and an interrupt call it
// for the turn they stop, and a reminder (while turns wait) notices a
// running turn that ended without a word.
package session

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/services/chat/turn"
)

// The actor's methods.
const (
	MethodAccept = "accept"
	MethodDone   = "done"
	MethodDrop   = "drop"
	reminder     = "advance"
	stateKey     = "turns"
	recentMax    = 64
	markerTTL    = "86400"
)

// Turns is what the actor does with turns (turn.Client).
type Turns interface {
	// Start schedules the turn; one that exists already counts as started
	// (fresh: the caller has just found none with this id).
	Start(ctx context.Context, id string, in turn.Input, fresh bool) error
	// Ended reports whether the turn has ended (or never started).
	Ended(ctx context.Context, id string) (bool, error)
	// Stop ends the turn (Dapr's terminate).
	Stop(ctx context.Context, id string) error
}

// Sidecar is the part of the Dapr client the actor uses: its state, its
// reminder, and the waiting turns' markers (turn.Queued, for GET
// /chat/{id}).
type Sidecar interface {
	GetActorState(ctx context.Context, in *dapr.GetActorStateRequest) (*dapr.GetActorStateResponse, error)
	SaveStateTransactionally(ctx context.Context, actorType, actorID string, operations []*dapr.ActorStateOperation) error
	RegisterActorReminder(ctx context.Context, in *dapr.RegisterActorReminderRequest) error
	UnregisterActorReminder(ctx context.Context, in *dapr.UnregisterActorReminderRequest) error
	SaveState(ctx context.Context, storeName, key string, data []byte, meta map[string]string, so ...dapr.StateOption) error
	GetState(ctx context.Context, storeName, key string, meta map[string]string) (*dapr.StateItem, error)
}

// Actor is the session actor's behaviour (its HTTP side: http.go).
type Actor struct {
	Sidecar Sidecar
	Turns   Turns
	// Stopped is called for a turn an interrupt stopped (the approvals it
	// waited on can no longer be decided); nil: nothing.
	Stopped func(ctx context.Context, id string)
	Period  time.Duration // of the reminder while turns wait; default 15 s
	Log     *slog.Logger

	// The state of the actors active here, as last saved: Dapr runs an
	// actor on one replica at a time and tells the replica when it goes
	// (deactivation: Forget), so a read of the actor state store per call
	// is not needed while it stays (the SDKs' state cache does the same).
	mu     sync.Mutex
	cached map[string]state
}

// maxCached bounds the cache; beyond it, an actor's state is read again.
const maxCached = 10000

// Forget drops the cached state of an actor Dapr deactivated here.
func (a *Actor) Forget(session string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.cached, session)
}

// Accept is a turn to run on the session. chat-service writes it to its
// own state (RequestKey) before it calls accept with the turn's id only:
// Dapr applies no access policy to an app's actors, so any sidecar could
// call accept — but only chat-service can write its own state keys (the
// state store prefixes them with the app id), so an accept names a turn
// chat-service checked, never one another app made up.
type Accept struct {
	InstanceID string              `json:"instance_id"`
	Input      turn.Input          `json:"input"`
	Policy     contract.BusyPolicy `json:"policy,omitempty"`
	// Fresh: the caller has just found no turn with this id (a started
	// turn is then not looked for first).
	Fresh bool `json:"fresh,omitempty"`
}

// RequestKey is the state key of turn id's Accept.
func RequestKey(id string) string { return "turn-accept|" + id }

// requestTTL keeps an Accept long enough for its call (and a retry).
const requestTTL = "3600"

// Accepted answers accept.
type Accepted struct {
	// Status is PENDING (started) or QUEUED; "" when refused.
	Status contract.RunStatus `json:"status,omitempty"`
	// Running is the turn the session runs (for a refusal, the one in the way).
	Running string `json:"running,omitempty"`
	Refused bool   `json:"refused,omitempty"`
}

// state is the actor's.
type state struct {
	Running string    `json:"running,omitempty"`
	Queue   []waiting `json:"queue,omitempty"`
	// Last is the turn started last: the next turn's Input.After.
	Last string `json:"last,omitempty"`
	// Recent are the turns accepted lately (a repeated accept of one of
	// them, an idempotent retry, changes nothing).
	Recent []string `json:"recent,omitempty"`
}

type waiting struct {
	ID    string     `json:"id"`
	Input turn.Input `json:"input"`
}

// Call runs method of the session's actor with body.
func (a *Actor) Call(ctx context.Context, session, method string, body []byte) (any, error) {
	st, err := a.load(ctx, session)
	if err != nil {
		return nil, err
	}
	before, _ := json.Marshal(st)
	var out any
	switch method {
	case MethodAccept:
		var id string
		if err := json.Unmarshal(body, &id); err != nil {
			return nil, apperr.New(apperr.Invalid, "accept: a turn id")
		}
		var req Accept
		if req, err = a.request(ctx, session, id); err == nil {
			out, err = a.accept(ctx, session, &st, req)
		}
	case MethodDone:
		var id string
		if err := json.Unmarshal(body, &id); err != nil {
			return nil, apperr.New(apperr.Invalid, "done: a turn id")
		}
		if st.Running == id {
			st.Running = ""
		}
		err = a.advance(ctx, &st)
	case MethodDrop:
		var id string
		if err := json.Unmarshal(body, &id); err != nil {
			return nil, apperr.New(apperr.Invalid, "drop: a turn id")
		}
		out, err = a.drop(ctx, &st, id)
	case "remind/" + reminder:
		err = a.remind(ctx, session, &st)
	default:
		return nil, apperr.New(apperr.NotFound, "no actor method %s", method)
	}
	if err != nil {
		return nil, err
	}
	if after, _ := json.Marshal(st); string(after) != string(before) {
		if err := a.save(ctx, session, st); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// request reads the Accept chat-service wrote for turn id of session.
func (a *Actor) request(ctx context.Context, session, id string) (Accept, error) {
	var req Accept
	item, err := a.Sidecar.GetState(ctx, contract.StateStore, RequestKey(id), nil)
	if err != nil {
		return req, apperr.Wrap(apperr.Unavailable, err, "the state store is unavailable")
	}
	if item == nil || len(item.Value) == 0 || json.Unmarshal(item.Value, &req) != nil || req.InstanceID != id || req.Input.SessionID != session {
		return req, apperr.New(apperr.Invalid, "accept: no turn %s was sent to session %s", id, session)
	}
	return req, nil
}

func (a *Actor) accept(ctx context.Context, session string, st *state, req Accept) (Accepted, error) {
	id := req.InstanceID
	switch {
	case st.Running == id:
		return Accepted{Status: contract.RunPending, Running: id}, nil
	case slices.ContainsFunc(st.Queue, func(w waiting) bool { return w.ID == id }):
		return Accepted{Status: contract.RunQueued, Running: st.Running}, nil
	case slices.Contains(st.Recent, id):
		return Accepted{Status: contract.RunPending, Running: st.Running}, nil // accepted before: it ran or runs
	}
	if st.Running != "" {
		ended, err := a.Turns.Ended(ctx, st.Running)
		if err != nil {
			return Accepted{}, err
		}
		if ended { // its end was not reported (a crash): the session is free
			a.Log.Warn("the session's running turn had ended without handing the session on", "session_id", session, "workflow_instance_id", st.Running)
			st.Running = ""
		}
	}
	if err := a.advance(ctx, st); err != nil {
		return Accepted{}, err
	}
	if st.Running != "" {
		switch req.Policy {
		case contract.BusyReject:
			return Accepted{Running: st.Running, Refused: true}, nil
		case contract.BusyInterrupt:
			stopped := st.Running
			if err := a.Turns.Stop(ctx, stopped); err != nil {
				return Accepted{}, err
			}
			if a.Stopped != nil {
				a.Stopped(ctx, stopped)
			}
			a.Log.Info("chat turn interrupted by a newer one", "session_id", session, "workflow_instance_id", stopped, "by", id)
			st.Running = ""
		default:
			m, _ := json.Marshal(turn.Queued{SessionID: req.Input.SessionID, UserID: req.Input.UserID})
			if err := a.Sidecar.SaveState(ctx, contract.StateStore, turn.QueuedKey(id), m, map[string]string{"ttlInSeconds": markerTTL}); err != nil {
				return Accepted{}, apperr.Wrap(apperr.Unavailable, err, "the state store is unavailable")
			}
			if len(st.Queue) == 0 {
				if err := a.watch(ctx, session); err != nil {
					return Accepted{}, err
				}
			}
			st.Queue = append(st.Queue, waiting{ID: id, Input: req.Input})
			st.Recent = remember(st.Recent, id)
			return Accepted{Status: contract.RunQueued, Running: st.Running}, nil
		}
	}
	if err := a.start(ctx, st, id, req.Input, req.Fresh); err != nil {
		return Accepted{}, err
	}
	return Accepted{Status: contract.RunPending, Running: id}, nil
}

// start starts turn id after the session's last one.
func (a *Actor) start(ctx context.Context, st *state, id string, in turn.Input, fresh bool) error {
	if st.Last != id {
		in.After = st.Last
	}
	if err := a.Turns.Start(ctx, id, in, fresh); err != nil {
		return err
	}
	st.Running, st.Last = id, id
	st.Recent = remember(st.Recent, id)
	return nil
}

// advance starts the first waiting turn when none runs.
func (a *Actor) advance(ctx context.Context, st *state) error {
	for st.Running == "" && len(st.Queue) > 0 {
		w := st.Queue[0]
		if err := a.start(ctx, st, w.ID, w.Input, false); err != nil {
			return err
		}
		st.Queue = st.Queue[1:]
	}
	return nil
}

// drop takes a waiting turn off the queue (cancelled before it started);
// it reports whether the turn was waiting.
func (a *Actor) drop(ctx context.Context, st *state, id string) (bool, error) {
	i := slices.IndexFunc(st.Queue, func(w waiting) bool { return w.ID == id })
	if i < 0 {
		return false, nil
	}
	w := st.Queue[i]
	m, _ := json.Marshal(turn.Queued{SessionID: w.Input.SessionID, UserID: w.Input.UserID, Cancelled: true})
	if err := a.Sidecar.SaveState(ctx, contract.StateStore, turn.QueuedKey(id), m, map[string]string{"ttlInSeconds": markerTTL}); err != nil {
		return false, apperr.Wrap(apperr.Unavailable, err, "the state store is unavailable")
	}
	st.Queue = slices.Delete(st.Queue, i, i+1)
	return true, nil
}

// remind is the reminder's tick while turns wait: a running turn that ended
// without handing the session on frees it; with nothing waiting any more,
// the reminder stops.
func (a *Actor) remind(ctx context.Context, session string, st *state) error {
	if st.Running != "" {
		ended, err := a.Turns.Ended(ctx, st.Running)
		if err != nil {
			return err
		}
		if ended {
			a.Log.Warn("the session's running turn had ended without handing the session on", "session_id", session, "workflow_instance_id", st.Running)
			st.Running = ""
		}
	}
	if err := a.advance(ctx, st); err != nil {
		return err
	}
	if len(st.Queue) == 0 {
		return a.Sidecar.UnregisterActorReminder(ctx, &dapr.UnregisterActorReminderRequest{ActorType: contract.SessionActor, ActorID: session, Name: reminder})
	}
	return nil
}

func (a *Actor) watch(ctx context.Context, session string) error {
	p := a.Period
	if p <= 0 {
		p = 15 * time.Second
	}
	err := a.Sidecar.RegisterActorReminder(ctx, &dapr.RegisterActorReminderRequest{ActorType: contract.SessionActor, ActorID: session,
		Name: reminder, DueTime: p.String(), Period: p.String()})
	if err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "the session's reminder could not be set")
	}
	return nil
}

func remember(recent []string, id string) []string {
	if slices.Contains(recent, id) {
		return recent
	}
	recent = append(recent, id)
	if len(recent) > recentMax {
		recent = recent[len(recent)-recentMax:]
	}
	return recent
}

func (a *Actor) load(ctx context.Context, session string) (state, error) {
	a.mu.Lock()
	st, ok := a.cached[session]
	a.mu.Unlock()
	if ok {
		return st.clone(), nil
	}
	res, err := a.Sidecar.GetActorState(ctx, &dapr.GetActorStateRequest{ActorType: contract.SessionActor, ActorID: session, KeyName: stateKey})
	if err != nil {
		return st, apperr.Wrap(apperr.Unavailable, err, "the session's state could not be read")
	}
	if res != nil && len(res.Data) > 0 {
		if err := json.Unmarshal(res.Data, &st); err != nil {
			return st, fmt.Errorf("session %s: %w", session, err)
		}
	}
	return st, nil
}

func (a *Actor) save(ctx context.Context, session string, st state) error {
	b, _ := json.Marshal(st)
	err := a.Sidecar.SaveStateTransactionally(ctx, contract.SessionActor, session,
		[]*dapr.ActorStateOperation{{OperationType: "upsert", Key: stateKey, Value: b}})
	if err != nil {
		a.Forget(session) // unknown whether it was saved: read it next time
		return apperr.Wrap(apperr.Unavailable, err, "the session's state could not be saved")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cached == nil {
		a.cached = map[string]state{}
	}
	if len(a.cached) >= maxCached {
		clear(a.cached)
	}
	a.cached[session] = st.clone()
	return nil
}

// clone copies the state's slices, so the cached copy is never changed
// in place.
func (st state) clone() state {
	st.Queue = slices.Clone(st.Queue)
	st.Recent = slices.Clone(st.Recent)
	return st
}
