// Package approval keeps the requests of tool calls that wait for a user's
// decision (contract.Approval) in the Dapr state store, and decides them.
// The record is the one arbiter of a request's outcome: a decision, the
// expiry and a stopped turn each change it only from PENDING, with the
// record's ETag, so exactly one of them wins, and whoever comes second reads
// the winner's. The turn's workflow waits for the decision as an external
// event (contract.ApprovalEvent); its timer's end reads the record too (a
// decision recorded just before the timer fired is the one that counts).
//
// Keys (chat-service's, in contract.StateStore): approval|<id> (the
// record), approvals-pending|<user> (the ids of the user's pending
// requests, for listing), approval-waiting|<instance> (the turn's request
// that waits, for cancelChat).
package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/dapr/durabletask-go/workflow"
	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/daprc"
)

// State is the part of the sidecar's state API the store uses.
type State interface {
	GetState(ctx context.Context, storeName, key string, meta map[string]string) (*dapr.StateItem, error)
	SaveStateWithETag(ctx context.Context, storeName, key string, data []byte, etag string, meta map[string]string, so ...dapr.StateOption) error
	GetBulkState(ctx context.Context, storeName string, keys []string, meta map[string]string, parallelism int32) ([]*dapr.BulkStateItem, error)
}

// Publisher publishes through the sidecar.
type Publisher interface {
	PublishEvent(ctx context.Context, pubsubName, topicName string, data interface{}, opts ...dapr.PublishEventOption) error
}

// Raiser hands a decision to the waiting turn (the workflow client).
type Raiser interface {
	RaiseEvent(ctx context.Context, id, eventName string, opts ...workflow.RaiseEventOptions) error
}

// Store keeps the approvals.
type Store struct {
	State     State
	Publisher Publisher
	Turns     Raiser
	Log       *slog.Logger
	Now       func() time.Time // nil: time.Now
}

// keep is how long a request is kept after it was made: longer than any
// turn waits (APPROVAL_TIMEOUT is at most a day).
const keep = "604800" // 7 days, in seconds

// MaxTimeout is the longest APPROVAL_TIMEOUT.
const MaxTimeout = 24 * time.Hour

func recordKey(id string) string        { return "approval|" + id }
func pendingKey(user string) string     { return "approvals-pending|" + user }
func waitingKey(instance string) string { return "approval-waiting|" + instance }

var errConflict = errors.New("changed meanwhile")

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Get reads a request; nil when there is none.
func (s *Store) Get(ctx context.Context, id string) (*contract.Approval, error) {
	a, _, err := s.read(ctx, id)
	return a, err
}

func (s *Store) read(ctx context.Context, id string) (*contract.Approval, string, error) {
	item, err := s.State.GetState(ctx, contract.StateStore, recordKey(id), nil)
	if err != nil {
		return nil, "", apperr.Wrap(apperr.Unavailable, err, "the state store is unavailable")
	}
	if item == nil || len(item.Value) == 0 {
		return nil, "", nil
	}
	var a contract.Approval
	if err := json.Unmarshal(item.Value, &a); err != nil {
		return nil, "", fmt.Errorf("approval %s: %w", id, err)
	}
	return &a, item.Etag, nil
}

// write saves a with etag ("": only if there is no record yet); errConflict
// when the record changed (or exists) meanwhile.
func (s *Store) write(ctx context.Context, a contract.Approval, etag string) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	err = s.State.SaveStateWithETag(ctx, contract.StateStore, recordKey(a.ID), b, etag, map[string]string{"ttlInSeconds": keep},
		dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite))
	if err != nil {
		if daprc.IsETagMismatch(err) {
			return errConflict
		}
		return apperr.Wrap(apperr.Unavailable, err, "the state store is unavailable")
	}
	return nil
}

// Request records a's request (PENDING) and announces it; a request that
// is recorded already (the activity ran again) is answered as it stands.
func (s *Store) Request(ctx context.Context, a contract.Approval) (contract.Approval, error) {
	a.Status = contract.ApprovalPending
	cur, _, err := s.read(ctx, a.ID)
	if err != nil {
		return a, err
	}
	if cur == nil {
		switch err := s.write(ctx, a, ""); {
		case errors.Is(err, errConflict):
			if cur, _, err = s.read(ctx, a.ID); err != nil || cur == nil {
				return a, errors.Join(err, errors.New("approval record vanished"))
			}
		case err != nil:
			return a, err
		default:
			cur = &a
		}
	}
	if !cur.Decided() {
		if err := s.index(ctx, cur.UserID, cur.ID, true); err != nil {
			return *cur, err
		}
		if err := s.State.SaveStateWithETag(ctx, contract.StateStore, waitingKey(cur.InstanceID), []byte(cur.ID), "",
			map[string]string{"ttlInSeconds": keep}); err != nil {
			return *cur, apperr.Wrap(apperr.Unavailable, err, "the state store is unavailable")
		}
	}
	return *cur, s.publish(ctx, *cur)
}

// Decide records a decision on request id and hands it to the turn. A
// request decided before answers that first decision and changes nothing;
// an expired one, or one whose turn was stopped, is an Invalid error; an
// unknown one NotFound. The caller checks who may decide.
func (s *Store) Decide(ctx context.Context, id string, d contract.Decision) (contract.Approval, error) {
	if err := d.Check(); err != nil {
		return contract.Approval{}, err
	}
	for {
		a, etag, err := s.read(ctx, id)
		if err != nil {
			return contract.Approval{}, err
		}
		if a == nil {
			return contract.Approval{}, apperr.New(apperr.NotFound, "approval %s not found", id)
		}
		switch {
		case a.TurnEnded:
			return *a, apperr.New(apperr.Invalid, "the turn of approval %s was cancelled: it can no longer be decided", id)
		case a.Status == contract.ApprovalExpired:
			return *a, apperr.New(apperr.Invalid, "approval %s expired at %s: it can no longer be decided", id, a.ExpiresAt.Format(time.RFC3339))
		case a.Decided():
			// The first decision stands. Hand it to the turn again: the
			// first hand-over may have failed after the record was written.
			if err := s.raise(ctx, *a); err != nil {
				s.Log.Warn("a decided approval could not be handed to its turn again", "approval_id", id, "err", err)
			}
			return *a, nil
		case !s.now().Before(a.ExpiresAt):
			out, err := s.settle(ctx, a, etag, contract.ApprovalExpired, "", "")
			if errors.Is(err, errConflict) {
				continue
			} else if err != nil {
				return *a, err
			}
			return out, apperr.New(apperr.Invalid, "approval %s expired at %s: it can no longer be decided", id, a.ExpiresAt.Format(time.RFC3339))
		}
		status := contract.ApprovalDenied
		if d.Approve {
			status = contract.ApprovalApproved
		}
		out, err := s.settle(ctx, a, etag, status, d.Reason, d.DecidedBy)
		if errors.Is(err, errConflict) {
			continue // decided, expired or stopped meanwhile: answer that
		}
		if err != nil {
			return *a, err
		}
		if err := s.raise(ctx, out); err != nil {
			return out, apperr.Wrap(apperr.Unavailable, err, "the decision is recorded but could not reach the turn yet; decide again to retry")
		}
		return out, nil
	}
}

// Expire is the end of a turn's wait without a decision (its timer): the
// request becomes EXPIRED unless it was decided (or stopped) meanwhile,
// and the record's outcome is answered either way.
func (s *Store) Expire(ctx context.Context, id string) (contract.Approval, error) {
	for {
		a, etag, err := s.read(ctx, id)
		if err != nil {
			return contract.Approval{}, err
		}
		if a == nil {
			return contract.Approval{}, fmt.Errorf("approval %s not found", id)
		}
		if a.Decided() {
			return *a, nil
		}
		out, err := s.settle(ctx, a, etag, contract.ApprovalExpired, "", "")
		if errors.Is(err, errConflict) {
			continue
		}
		return out, err
	}
}

// EndTurn settles the request the stopped turn instanceID waited on, if
// any: DENIED, "the turn was cancelled", never to be decided.
func (s *Store) EndTurn(ctx context.Context, instanceID string) error {
	item, err := s.State.GetState(ctx, contract.StateStore, waitingKey(instanceID), nil)
	if err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "the state store is unavailable")
	}
	if item == nil || len(item.Value) == 0 {
		return nil
	}
	for {
		a, etag, err := s.read(ctx, string(item.Value))
		if err != nil || a == nil || a.Decided() {
			return err
		}
		a.TurnEnded = true
		if _, err := s.settle(ctx, a, etag, contract.ApprovalDenied, "the turn was cancelled", ""); !errors.Is(err, errConflict) {
			return err
		}
	}
}

// settle changes a pending request to status with the record's etag, takes
// it off its user's pending list and announces it.
func (s *Store) settle(ctx context.Context, a *contract.Approval, etag string, status contract.ApprovalStatus, reason, by string) (contract.Approval, error) {
	out := *a
	out.Status, out.Reason, out.DecidedBy = status, reason, by
	if etag == "" {
		return out, errConflict
	}
	if err := s.write(ctx, out, etag); err != nil {
		return out, err
	}
	if err := s.index(ctx, out.UserID, out.ID, false); err != nil {
		s.Log.Warn("a settled approval stays on its user's pending list until it is read", "approval_id", out.ID, "err", err)
	}
	return out, s.publish(ctx, out)
}

// Pending are the user's pending requests, oldest first (expired ones
// whose turn has not noticed yet are left out).
func (s *Store) Pending(ctx context.Context, userID string) ([]contract.Approval, error) {
	ids, _, err := s.pending(ctx, userID)
	if err != nil || len(ids) == 0 {
		return []contract.Approval{}, err
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = recordKey(id)
	}
	items, err := s.State.GetBulkState(ctx, contract.StateStore, keys, nil, 8)
	if err != nil {
		return nil, apperr.Wrap(apperr.Unavailable, err, "the state store is unavailable")
	}
	now := s.now()
	out := []contract.Approval{}
	for _, it := range items {
		var a contract.Approval
		if it == nil || len(it.Value) == 0 || json.Unmarshal(it.Value, &a) != nil {
			continue
		}
		if a.UserID == userID && !a.Decided() && !a.TurnEnded && now.Before(a.ExpiresAt) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(x, y contract.Approval) int { return x.RequestedAt.Compare(y.RequestedAt) })
	return out, nil
}

func (s *Store) pending(ctx context.Context, userID string) ([]string, string, error) {
	item, err := s.State.GetState(ctx, contract.StateStore, pendingKey(userID), nil)
	if err != nil {
		return nil, "", apperr.Wrap(apperr.Unavailable, err, "the state store is unavailable")
	}
	var ids []string
	if item != nil && len(item.Value) > 0 {
		if err := json.Unmarshal(item.Value, &ids); err != nil {
			return nil, "", err
		}
	}
	etag := ""
	if item != nil {
		etag = item.Etag
	}
	return ids, etag, nil
}

// maxPending bounds a user's pending list (the oldest go first).
const maxPending = 200

// index adds id to (or takes it off) the user's pending list.
func (s *Store) index(ctx context.Context, userID, id string, add bool) error {
	for range 20 {
		ids, etag, err := s.pending(ctx, userID)
		if err != nil {
			return err
		}
		has := slices.Contains(ids, id)
		if has == add {
			return nil
		}
		if add {
			ids = append(ids, id)
			if len(ids) > maxPending {
				ids = ids[len(ids)-maxPending:]
			}
		} else {
			ids = slices.DeleteFunc(ids, func(x string) bool { return x == id })
		}
		b, _ := json.Marshal(ids)
		err = s.State.SaveStateWithETag(ctx, contract.StateStore, pendingKey(userID), b, etag, map[string]string{"ttlInSeconds": keep},
			dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite))
		if err == nil {
			return nil
		}
		if !daprc.IsETagMismatch(err) {
			return apperr.Wrap(apperr.Unavailable, err, "the state store is unavailable")
		}
	}
	return apperr.New(apperr.Unavailable, "the pending approvals of %s changed too often to update", userID)
}

func (s *Store) raise(ctx context.Context, a contract.Approval) error {
	return s.Turns.RaiseEvent(ctx, a.InstanceID, contract.ApprovalEvent(a.ID), workflow.WithEventPayload(a))
}

// publish announces a request or its change on contract.TopicApprovals,
// the CloudEvent id naming the request and its status (a repeated publish
// is the same event).
func (s *Store) publish(ctx context.Context, a contract.Approval) error {
	err := s.Publisher.PublishEvent(ctx, contract.PubSub, contract.TopicApprovals, a,
		dapr.PublishEventWithMetadata(map[string]string{contract.CloudEventIDMetadata: a.ID + "." + string(a.Status)}))
	if err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "the approval could not be announced")
	}
	return nil
}
