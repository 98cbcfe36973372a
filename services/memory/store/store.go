// Package store is the agent's memory: user profiles and conversation
// history in the Dapr state store. Every write is a compare-and-swap on the
// key's ETag (first-write-wins), retried on conflict, so concurrent updates
// never lose entries; every conversation event is applied at most once.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

// State is the part of the Dapr client the memory uses.
type State interface {
	GetState(ctx context.Context, storeName, key string, meta map[string]string) (*dapr.StateItem, error)
	GetBulkState(ctx context.Context, storeName string, keys []string, meta map[string]string, parallelism int32) ([]*dapr.BulkStateItem, error)
	SaveStateWithETag(ctx context.Context, storeName, key string, data []byte, etag string, meta map[string]string, so ...dapr.StateOption) error
	DeleteStateWithETag(ctx context.Context, storeName, key string, etag *dapr.ETag, meta map[string]string, opts *dapr.StateOptions) error
}

// session is the stored document of a conversation (key session:{id}); its
// "history" field is the tutorial's shape.
type session struct {
	sessionView
	Applied   []string  `json:"applied_events,omitempty"` // ids of the last events applied
	UpdatedAt time.Time `json:"updated_at"`
}

// sessionView is the part of a session's document its reads need. The
// entries stay as stored until they are read: a turn reads the last few of
// up to HistoryCap (its context, the summary's) and appends two, and
// decoding and encoding every entry of the document (about 100 KB at the
// cap, with the applied ids) at each step cost a sixth of the store's work
// for a turn (BenchmarkTurnAtCap; docs/benchmark.md).
type sessionView struct {
	History []json.RawMessage `json:"history"`
	// Dropped counts the entries dropped from the front (HistoryCap): the
	// first entry kept is number Dropped+1 (contract.Entry.Seq).
	Dropped int    `json:"dropped,omitempty"`
	UserID  string `json:"user_id,omitempty"`
}

type userDoc struct {
	contract.Profile
	UpdatedAt time.Time `json:"updated_at"`
	// PendingTurns are the turns applied since the summary was last made,
	// PendingSession the latest one's session (Summarize makes it from
	// there).
	PendingTurns   int    `json:"pending_turns,omitempty"`
	PendingSession string `json:"pending_session,omitempty"`
	// LastTurnAt is when the latest waiting turn was applied; SummaryDue
	// when the user's summary job was last set to fire (zero: never).
	LastTurnAt time.Time `json:"last_turn_at,omitzero"`
	SummaryDue time.Time `json:"summary_due,omitzero"`
	// SummaryClaim is the event whose turn makes the summary of the
	// SummaryEvery turns that wait (Apply), since ClaimedAt; a claim older
	// than claimTTL is anyone's.
	SummaryClaim string    `json:"summary_claim,omitempty"`
	ClaimedAt    time.Time `json:"summary_claimed_at,omitzero"`
	// Usage is what the user's LLM calls took, by UTC day (2006-01-02; the
	// last usageDays days); Counted the ids of the last events counted in
	// it (a redelivered event counts once).
	Usage   map[string]dayUsage `json:"usage,omitempty"`
	Counted []string            `json:"usage_counted,omitempty"`
}

// dayUsage is a user's day.
type dayUsage struct {
	TokensIn  int `json:"tokens_in"`
	TokensOut int `json:"tokens_out"`
	LLMCalls  int `json:"llm_calls"`
	Turns     int `json:"turns"`
	ToolCalls int `json:"tool_calls"`
}

const (
	usageDays    = 40 // days of usage kept
	countedIDs   = 64 // event ids remembered as counted
	usageDayForm = "2006-01-02"
)

// count adds what calls took (and turns, tool calls) to the user's day at.
func (u *userDoc) count(at time.Time, use contract.Usage, turns, tools int) {
	if use == (contract.Usage{}) && turns == 0 && tools == 0 {
		return
	}
	if u.Usage == nil {
		u.Usage = map[string]dayUsage{}
	}
	day := at.UTC().Format(usageDayForm)
	d := u.Usage[day]
	d.TokensIn += use.PromptTokens
	d.TokensOut += use.CompletionTokens
	d.LLMCalls += use.LLMCalls
	d.Turns += turns
	d.ToolCalls += tools
	u.Usage[day] = d
	oldest := at.UTC().AddDate(0, 0, -usageDays).Format(usageDayForm)
	for k := range u.Usage {
		if k < oldest {
			delete(u.Usage, k)
		}
	}
}

// countEvent counts a turn's event once.
func (u *userDoc) countEvent(at time.Time, id string, ev contract.ConversationUpdated) {
	if slices.Contains(u.Counted, id) {
		return
	}
	var use contract.Usage
	if ev.Usage != nil {
		use = *ev.Usage
	}
	u.count(at, use, 1, len(ev.ToolCalls))
	u.Counted = append(u.Counted, id)
	if over := len(u.Counted) - countedIDs; over > 0 {
		u.Counted = slices.Delete(u.Counted, 0, over)
	}
}

// Usage is what user's LLM calls took from the start of since's UTC day on
// (the turns', with the memory's summaries).
func (m *Memory) Usage(ctx context.Context, userID string, since time.Time) (contract.UsageReply, error) {
	from := since.UTC().Truncate(24 * time.Hour)
	out := contract.UsageReply{UserID: userID, Since: from}
	var u userDoc
	if _, _, err := m.get(ctx, userKey(userID), &u); err != nil {
		return out, err
	}
	first := from.Format(usageDayForm)
	for day, d := range u.Usage {
		if day >= first {
			out.TokensIn += d.TokensIn
			out.TokensOut += d.TokensOut
			out.LLMCalls += d.LLMCalls
			out.Turns += d.Turns
			out.ToolCalls += d.ToolCalls
		}
	}
	return out, nil
}

type sessionIndex struct {
	Sessions []contract.SessionInfo `json:"sessions"`
}

// Config of the memory.
type Config struct {
	Store       string // state store name (default contract.StateStore)
	HistoryCap  int    // entries kept per session (default 200)
	SummaryLast int    // entries the summary is made from (default 10)
	// SummaryEvery: Apply makes the summary itself at every SummaryEvery-th
	// turn of a user's since the last one; between, it only counts the turn
	// (Summarize makes it later). 0 or 1: at every turn.
	SummaryEvery int
	// SummaryDebounce: a summary waits until the user's turns have paused
	// this long (Later). 0: no job is scheduled.
	SummaryDebounce time.Duration
	AppliedCap      int // event ids remembered per session for de-duplication (default 1000)
	MaxCASTries     int // attempts of a compare-and-swap under contention (default 200)
	// Retried is told of every compare-and-swap write that failed and is
	// made again (doc: the key's kind, user, session or sessions); nil:
	// nobody.
	Retried func(doc string)
	// Now is the clock (nil: time.Now, UTC).
	Now func() time.Time
}

// Memory reads and writes profiles and conversations.
type Memory struct {
	st  State
	cfg Config
	log *slog.Logger
	now func() time.Time
	// combine: concurrent updates of one key written together (updateRead).
	combine combiner
}

// New returns a Memory over the Dapr state API.
func New(st State, cfg Config, log *slog.Logger) *Memory {
	if cfg.Store == "" {
		cfg.Store = contract.StateStore
	}
	if cfg.HistoryCap <= 0 {
		cfg.HistoryCap = 200
	}
	if cfg.SummaryLast <= 0 {
		cfg.SummaryLast = 10
	}
	if cfg.AppliedCap <= 0 {
		cfg.AppliedCap = 1000
	}
	if cfg.MaxCASTries <= 0 {
		cfg.MaxCASTries = 200
	}
	now := cfg.Now
	if now == nil {
		now = func() time.Time { return time.Now().UTC() }
	}
	return &Memory{st: st, cfg: cfg, log: log, now: now}
}

// Config returns the effective configuration.
func (m *Memory) Config() Config { return m.cfg }

func userKey(id string) string     { return "user:" + id }
func sessionKey(id string) string  { return "session:" + id }
func sessionsKey(id string) string { return "sessions:" + id }

var errStore = errors.New("state store")

// get reads key into v; it returns the ETag ("" when the key is absent).
func (m *Memory) get(ctx context.Context, key string, v any) (etag string, found bool, err error) {
	item, err := m.st.GetState(ctx, m.cfg.Store, key, nil)
	if err != nil {
		return "", false, apperr.Wrap(apperr.Unavailable, fmt.Errorf("%w: get %s: %v", errStore, key, err), "the state store is unavailable")
	}
	if item == nil {
		return "", false, nil
	}
	if len(item.Value) == 0 {
		return item.Etag, false, nil
	}
	if err := json.Unmarshal(item.Value, v); err != nil {
		return "", false, apperr.Wrap(apperr.Internal, fmt.Errorf("decode %s: %w", key, err), "stored data is corrupt")
	}
	return item.Etag, true, nil
}

// update runs a compare-and-swap loop on key: read, change (which may return
// errSkip to write nothing), write with the ETag read; on a conflict, again.
func (m *Memory) update(ctx context.Context, key string, v any, change func(found bool) error) error {
	return m.updateRead(ctx, key, v, nil, change)
}

// read is what a get of a key answered: update's first attempt starts from
// it instead of reading the key again.
type read struct {
	etag  string
	found bool
}

var errSkip = errors.New("skip write")

func (m *Memory) delete(ctx context.Context, key string) error {
	if err := m.st.DeleteStateWithETag(ctx, m.cfg.Store, key, nil, nil, nil); err != nil {
		return apperr.Wrap(apperr.Unavailable, fmt.Errorf("%w: delete %s: %v", errStore, key, err), "the state store is unavailable")
	}
	return nil
}

// Profile returns a user's profile, or the defaults for an unknown user.
func (m *Memory) Profile(ctx context.Context, userID string) (contract.Profile, error) {
	var u userDoc
	_, found, err := m.get(ctx, userKey(userID), &u)
	if err != nil {
		return contract.Profile{}, err
	}
	if !found {
		return contract.DefaultProfile(userID), nil
	}
	return u.Profile, nil
}

// Initialize sets a user's profile. Empty fields get the defaults.
func (m *Memory) Initialize(ctx context.Context, userID string, p contract.Profile) (contract.Profile, error) {
	def := contract.DefaultProfile(userID)
	if p.Name == "" {
		p.Name = def.Name
	}
	if p.PreferredStyle == "" {
		p.PreferredStyle = def.PreferredStyle
	}
	if p.UserSummary == "" {
		p.UserSummary = def.UserSummary
	}
	var u userDoc
	err := m.update(ctx, userKey(userID), &u, func(bool) error {
		u = userDoc{Profile: p, UpdatedAt: m.now()}
		return nil
	})
	return p, err
}

// History returns a session's entries, the last `last` of them when last > 0;
// with userID set, only when that user owns the session (an empty list
// otherwise, as for an unknown session).
func (m *Memory) History(ctx context.Context, sessionID, userID string, last int) ([]contract.Entry, error) {
	var s sessionView
	_, _, err := m.get(ctx, sessionKey(sessionID), &s)
	if err != nil {
		return nil, err
	}
	if userID != "" && s.UserID != userID {
		return []contract.Entry{}, nil // another user's session reads as an unknown one
	}
	return s.entries(sessionID, last)
}

// Context is a user's profile and the last `last` entries of a session the
// user owns (none of another user's or an unknown session), read at once.
func (m *Memory) Context(ctx context.Context, userID, sessionID string, last int) (contract.Profile, []contract.Entry, error) {
	p, h := contract.DefaultProfile(userID), []contract.Entry{}
	items, err := m.st.GetBulkState(ctx, m.cfg.Store, []string{userKey(userID), sessionKey(sessionID)}, nil, 0)
	if err != nil {
		return p, nil, apperr.Wrap(apperr.Unavailable, fmt.Errorf("%w: bulk get: %v", errStore, err), "the state store is unavailable")
	}
	for _, it := range items {
		if it == nil || len(it.Value) == 0 && it.Error == "" {
			continue
		}
		if it.Error != "" {
			return p, nil, apperr.Wrap(apperr.Unavailable, fmt.Errorf("%w: bulk get %s: %s", errStore, it.Key, it.Error), "the state store is unavailable")
		}
		switch it.Key {
		case userKey(userID):
			var u userDoc
			if err := json.Unmarshal(it.Value, &u); err != nil {
				return p, nil, apperr.Wrap(apperr.Internal, fmt.Errorf("decode %s: %w", it.Key, err), "stored data is corrupt")
			}
			p = u.Profile
		case sessionKey(sessionID):
			var s sessionView
			if err := json.Unmarshal(it.Value, &s); err != nil {
				return p, nil, apperr.Wrap(apperr.Internal, fmt.Errorf("decode %s: %w", it.Key, err), "stored data is corrupt")
			}
			if s.UserID == userID {
				if h, err = s.entries(sessionID, last); err != nil {
					return p, nil, err
				}
			}
		}
	}
	return p, h, nil
}

// entries decodes the session's entries numbered (Seq), the last `last` of
// them when last > 0; never nil.
func (s sessionView) entries(id string, last int) ([]contract.Entry, error) {
	from := 0
	if last > 0 && len(s.History) > last {
		from = len(s.History) - last
	}
	h := make([]contract.Entry, 0, len(s.History)-from)
	for i, raw := range s.History[from:] {
		var e contract.Entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, apperr.Wrap(apperr.Internal, fmt.Errorf("decode %s: entry %d: %w", sessionKey(id), from+i, err), "stored data is corrupt")
		}
		e.Seq = s.Dropped + from + i + 1
		h = append(h, e)
	}
	return h, nil
}

// add appends entries to the session's history, keeping its last cap.
func (s *session) add(limit int, es ...contract.Entry) error {
	for _, e := range es {
		e.Seq = 0 // numbered when read, never stored
		b, err := json.Marshal(e)
		if err != nil {
			return apperr.Wrap(apperr.Internal, err, "encoding failed")
		}
		s.History = append(s.History, b)
	}
	if over := len(s.History) - limit; over > 0 {
		s.History = slices.Delete(s.History, 0, over)
		s.Dropped += over
	}
	return nil
}

// Histories returns the entries of several sessions (the last `last` of each
// when last > 0) in one read of the state store, keyed by session id. A
// session without history maps to an empty list.
func (m *Memory) Histories(ctx context.Context, sessionIDs []string, last int) (map[string][]contract.Entry, error) {
	out := make(map[string][]contract.Entry, len(sessionIDs))
	if len(sessionIDs) == 0 {
		return out, nil
	}
	if len(sessionIDs) > contract.MaxBatch {
		return nil, apperr.New(apperr.Invalid, "at most %d sessions at once", contract.MaxBatch)
	}
	keys := make([]string, 0, len(sessionIDs))
	for _, id := range sessionIDs {
		if _, dup := out[id]; !dup {
			out[id] = []contract.Entry{}
			keys = append(keys, sessionKey(id))
		}
	}
	items, err := m.st.GetBulkState(ctx, m.cfg.Store, keys, nil, 0)
	if err != nil {
		return nil, apperr.Wrap(apperr.Unavailable, fmt.Errorf("%w: bulk get %d keys: %v", errStore, len(keys), err), "the state store is unavailable")
	}
	for _, it := range items {
		if it == nil {
			continue
		}
		if it.Error != "" {
			return nil, apperr.Wrap(apperr.Unavailable, fmt.Errorf("%w: bulk get %s: %s", errStore, it.Key, it.Error), "the state store is unavailable")
		}
		id, ok := strings.CutPrefix(it.Key, sessionKey(""))
		if _, asked := out[id]; !ok || !asked || len(it.Value) == 0 {
			continue
		}
		var s sessionView
		if err := json.Unmarshal(it.Value, &s); err != nil {
			return nil, apperr.Wrap(apperr.Internal, fmt.Errorf("decode %s: %w", it.Key, err), "stored data is corrupt")
		}
		if out[id], err = s.entries(id, last); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// notOwner is the error for a session that belongs to another user.
func notOwner(sessionID string) error {
	return apperr.New(apperr.Forbidden, "session %s belongs to another user", sessionID)
}

// Owner returns the user sessionID belongs to: the one who started it
// (Claim), recorded once and never changed; "" for a session nobody has
// started. One read.
func (m *Memory) Owner(ctx context.Context, sessionID string) (string, error) {
	var s struct {
		UserID string `json:"user_id,omitempty"`
	}
	if _, _, err := m.get(ctx, sessionKey(sessionID), &s); err != nil {
		return "", err
	}
	return s.UserID, nil
}

// Claim records userID as the owner of sessionID, once: a session nobody
// owns becomes userID's, a session of userID's stays so, and a session of
// another user is refused (Forbidden) and left unchanged.
func (m *Memory) Claim(ctx context.Context, sessionID, userID string) error {
	var s session
	return m.update(ctx, sessionKey(sessionID), &s, func(bool) error {
		switch s.UserID {
		case userID:
			return errSkip
		case "":
			s.UserID = userID
			if s.History == nil {
				s.History = []json.RawMessage{}
			}
			if s.UpdatedAt.IsZero() {
				s.UpdatedAt = m.now()
			}
			return nil
		default:
			return notOwner(sessionID)
		}
	})
}

// Sessions lists a user's sessions, newest first.
func (m *Memory) Sessions(ctx context.Context, userID string) ([]contract.SessionInfo, error) {
	var idx sessionIndex
	if _, _, err := m.get(ctx, sessionsKey(userID), &idx); err != nil {
		return nil, err
	}
	if idx.Sessions == nil {
		return []contract.SessionInfo{}, nil
	}
	return idx.Sessions, nil
}

// DeleteConversation deletes a session's history and removes it from its
// user's session list. It reports whether the session existed.
func (m *Memory) DeleteConversation(ctx context.Context, sessionID string) (bool, error) {
	var s session
	_, found, err := m.get(ctx, sessionKey(sessionID), &s)
	if err != nil || !found {
		return false, err
	}
	if s.UserID != "" {
		var idx sessionIndex
		if err := m.update(ctx, sessionsKey(s.UserID), &idx, func(found bool) error {
			n := len(idx.Sessions)
			idx.Sessions = slices.DeleteFunc(idx.Sessions, func(si contract.SessionInfo) bool { return si.SessionID == sessionID })
			if len(idx.Sessions) == n {
				return errSkip
			}
			return nil
		}); err != nil {
			return false, err
		}
	}
	return true, m.delete(ctx, sessionKey(sessionID))
}

// ForgetUser deletes a user's profile, sessions and their history. It
// returns the number of sessions deleted.
func (m *Memory) ForgetUser(ctx context.Context, userID string) (int, error) {
	var idx sessionIndex
	if _, _, err := m.get(ctx, sessionsKey(userID), &idx); err != nil {
		return 0, err
	}
	for _, si := range idx.Sessions {
		if err := m.delete(ctx, sessionKey(si.SessionID)); err != nil {
			return 0, err
		}
	}
	if err := m.delete(ctx, sessionsKey(userID)); err != nil {
		return 0, err
	}
	return len(idx.Sessions), m.delete(ctx, userKey(userID))
}

// Later schedules (or moves) the user's summary job to fire after the
// given time; the job calls Summarize. Apply and Summarize take nil when
// no job is used (SummaryDebounce 0).
type Later func(ctx context.Context, after time.Duration) error

// Summarizer writes a new user summary from the profile and recent history.
type Summarizer func(ctx context.Context, p contract.Profile, recent []contract.Entry) (string, contract.Usage, error)

// Result of applying an event.
type Result struct {
	Duplicate   bool
	UserSummary string
	Summarized  bool // the summary was made (UserSummary); false: it waits (Summarize)
	Entries     int  // history length after the event
}

// index records a session's size and last message in its user's session
// list, from the session's history after an append. It is idempotent, and
// an older history (a concurrent event that was slower) never overwrites a
// newer one.
func (m *Memory) index(ctx context.Context, userID, sessionID string, s *session) error {
	if len(s.History) == 0 {
		return nil
	}
	tail, err := s.entries(sessionID, 1)
	if err != nil {
		return err
	}
	last, count := tail[0], len(s.History)
	last.Seq = 0
	var idx sessionIndex
	return m.update(ctx, sessionsKey(userID), &idx, func(bool) error {
		i := slices.IndexFunc(idx.Sessions, func(si contract.SessionInfo) bool { return si.SessionID == sessionID })
		if i < 0 {
			idx.Sessions = append(idx.Sessions, contract.SessionInfo{SessionID: sessionID})
			i = len(idx.Sessions) - 1
		}
		si := &idx.Sessions[i]
		switch {
		case si.LastMessage == nil || !last.Timestamp.Before(si.LastMessage.Timestamp):
			si.MessageCount = count
			si.LastMessage = &last
		case count > si.MessageCount:
			si.MessageCount = count
		default:
			return errSkip
		}
		if last.Timestamp.After(si.UpdatedAt) {
			si.UpdatedAt = last.Timestamp
		}
		sort.SliceStable(idx.Sessions, func(a, b int) bool { return idx.Sessions[a].UpdatedAt.After(idx.Sessions[b].UpdatedAt) })
		return nil
	})
}

// Apply appends an event's two entries to its session (once per event id),
// regenerates the user summary, and records the session in the user's list.
// Errors carry codes: Unavailable (retry later), Forbidden (the event's user
// does not own the session: never applied) or Internal.
//
// A turn whose summary waits (SummaryEvery) needs the user's summary job:
// the first such turn schedules it (later) before it is counted, and the
// turns after it only record when they came (LastTurnAt); the job moves
// itself on while turns keep coming (Summarize). One call to the scheduler
// per pause of the user's, not one per turn.
func (m *Memory) Apply(ctx context.Context, eventID string, ev contract.ConversationUpdated, summarize Summarizer, later Later) (Result, error) {
	var s session
	var sr read
	var err error
	if sr.etag, sr.found, err = m.get(ctx, sessionKey(ev.SessionID), &s); err != nil {
		return Result{}, err
	}
	if slices.Contains(s.Applied, eventID) {
		// Applied already; the session list may have missed it if the
		// service stopped right after the append, and the summary its job
		// if scheduling it failed.
		if err := m.index(ctx, ev.UserID, ev.SessionID, &s); err != nil {
			return Result{}, err
		}
		if err := m.ensureJob(ctx, ev.UserID, later, nil); err != nil {
			return Result{}, err
		}
		return Result{Duplicate: true, Entries: len(s.History)}, nil
	}
	if s.UserID != "" && s.UserID != ev.UserID {
		return Result{}, notOwner(ev.SessionID) // before the LLM is asked for anything
	}
	var u userDoc
	var ur read
	if ur.etag, ur.found, err = m.get(ctx, userKey(ev.UserID), &u); err != nil {
		return Result{}, err
	} else if !ur.found {
		u.Profile = contract.DefaultProfile(ev.UserID)
	}
	// inline: the tutorial's flow, every turn's summary made before
	// anything is written (SummaryEvery 0 or 1).
	inline := m.cfg.SummaryEvery <= 1
	now := m.now()
	at := ev.SentAt
	if at.IsZero() {
		at = now
	}
	userEntry := contract.Entry{Role: contract.RoleUser, Content: ev.UserMessage, Timestamp: now, EventID: eventID, EventAt: at}
	botEntry := contract.Entry{Role: contract.RoleAssistant, Content: ev.AssistantReply, Timestamp: now, EventID: eventID, EventAt: at, ToolCalls: ev.ToolCalls}
	// recent is what a summary is made of: the session's last entries with
	// this turn's two (decoded only for a turn that makes a summary).
	recent := func() ([]contract.Entry, error) {
		r, err := s.entries(ev.SessionID, m.cfg.SummaryLast)
		if err != nil {
			return nil, err
		}
		r = append(r, userEntry, botEntry)
		return r[max(len(r)-m.cfg.SummaryLast, 0):], nil
	}
	var summary string
	var summaryUse contract.Usage
	if inline {
		r, err := recent()
		if err != nil {
			return Result{}, err
		}
		if summary, summaryUse, err = summarize(ctx, u.Profile, r); err != nil {
			return Result{}, err
		}
	}
	// The job before the turn is counted: a counted turn never lacks one.
	scheduled := false
	if later != nil && !inline && !jobWaits(&u, now) {
		if err := m.schedule(ctx, later, m.cfg.SummaryDebounce); err != nil {
			return Result{}, err
		}
		scheduled = true
	}
	late := false // the job fired meanwhile: schedule it again below
	// due: this turn makes the summary of the seen turns that wait for it.
	due, seen := false, 0

	// The summary (or the count of turns it waits for) first: doing it
	// again is harmless if the event is delivered again because a later
	// step failed (a turn counted twice only brings the summary forward).
	// Both writes start from the reads above (a conflict reads again).
	if err := m.updateRead(ctx, userKey(ev.UserID), &u, &ur, func(found bool) error {
		if !found {
			u.Profile = contract.DefaultProfile(ev.UserID)
		}
		late, due, seen = false, false, 0
		u.countEvent(now, eventID, ev)
		u.count(now, summaryUse, 0, 0) // every summary call: the provider billed each
		if inline {
			u.UserSummary, u.PendingTurns, u.PendingSession = summary, 0, ""
		} else {
			u.PendingTurns++
			u.PendingSession = ev.SessionID
			u.LastTurnAt = now
			// The turn whose count reaches SummaryEvery claims the summary,
			// decided on the document as written: of turns applied at once
			// one makes it, where each used to (each read the count before
			// the others' writes, and the model was asked once per turn).
			if u.PendingTurns >= m.cfg.SummaryEvery && (u.SummaryClaim == "" || u.SummaryClaim == eventID || now.Sub(u.ClaimedAt) > claimTTL) {
				u.SummaryClaim, u.ClaimedAt = eventID, now
				due, seen = true, u.PendingTurns
			}
			if scheduled {
				u.SummaryDue = now.Add(m.cfg.SummaryDebounce)
			} else if later != nil && !jobWaits(&u, now) {
				late = true
			}
		}
		u.UpdatedAt = now
		return nil
	}); err != nil {
		return Result{}, err
	}
	if late {
		if err := m.ensureJob(ctx, ev.UserID, later, nil); err != nil {
			return Result{}, err
		}
	}
	if due {
		r, err := recent()
		if err != nil {
			return Result{}, err
		}
		if summary, err = m.summarizeClaimed(ctx, ev.UserID, eventID, seen, u.Profile, r, summarize); err != nil {
			return Result{}, err
		}
	}

	// The history append is the step that must happen exactly once.
	dup := false
	if err := m.updateRead(ctx, sessionKey(ev.SessionID), &s, &sr, func(bool) error {
		if slices.Contains(s.Applied, eventID) {
			dup = true
			return errSkip
		}
		if s.UserID != "" && s.UserID != ev.UserID { // claimed by another user meanwhile
			return notOwner(ev.SessionID)
		}
		s.UserID = ev.UserID
		if err := s.add(m.cfg.HistoryCap, userEntry, botEntry); err != nil {
			return err
		}
		s.Applied = append(s.Applied, eventID)
		if over := len(s.Applied) - m.cfg.AppliedCap; over > 0 {
			s.Applied = slices.Delete(s.Applied, 0, over)
		}
		s.UpdatedAt = now
		return nil
	}); err != nil {
		return Result{}, err
	}
	// The session list last, from the history as it now is: repeating it
	// (a redelivery after a crash here) changes nothing.
	if err := m.index(ctx, ev.UserID, ev.SessionID, &s); err != nil {
		return Result{}, err
	}
	return Result{Duplicate: dup, UserSummary: summary, Summarized: inline || due, Entries: len(s.History)}, nil
}

// summarized records a summary made of the seen turns that waited for
// it, and what its model call took; claim (an event id), when it holds the
// document's claim, releases it.
func (u *userDoc) summarized(now time.Time, summary string, use contract.Usage, seen int, claim string) {
	u.count(now, use, 0, 0)
	u.UserSummary = summary
	u.PendingTurns = max(u.PendingTurns-seen, 0)
	if u.PendingTurns == 0 {
		u.PendingSession = ""
	}
	if claim != "" && u.SummaryClaim == claim {
		u.SummaryClaim, u.ClaimedAt = "", time.Time{}
	}
	u.UpdatedAt = now
}

// claimTTL: a summary claimed longer ago than this is anyone's (its turn's
// model call outlasted every timeout, or its process died and the event's
// redelivery, which would take it again, has not come).
const claimTTL = 2 * time.Minute

// summarizeClaimed makes the summary that turn eventID claimed (Apply), of
// the seen turns counted then, and records it. When the model fails the
// claim stays the event's: its redelivery makes the summary (past claimTTL
// any turn, and the user's job, may too).
func (m *Memory) summarizeClaimed(ctx context.Context, userID, eventID string, seen int, p contract.Profile, recent []contract.Entry, summarize Summarizer) (string, error) {
	summary, use, err := summarize(ctx, p, recent)
	if err != nil {
		return "", err
	}
	now := m.now()
	var u userDoc
	return summary, m.update(ctx, userKey(userID), &u, func(found bool) error {
		if !found {
			return errSkip // forgotten meanwhile
		}
		u.summarized(now, summary, use, seen, eventID)
		return nil
	})
}

// jobWaits: the user's summary job is set to fire after now.
func jobWaits(u *userDoc, now time.Time) bool {
	return !u.SummaryDue.IsZero() && now.Before(u.SummaryDue)
}

func (m *Memory) schedule(ctx context.Context, later Later, after time.Duration) error {
	if err := later(ctx, after); err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "the scheduler is unavailable")
	}
	return nil
}

// ensureJob schedules the user's summary job when turns wait for a summary
// and no job is set to fire, due SummaryDebounce after the latest of them,
// and records it. firing is the due time of the job that calls it (nil:
// none): that job counts as gone, unless a newer one was set meanwhile (a
// clock behind the scheduler's would otherwise see it still waiting).
func (m *Memory) ensureJob(ctx context.Context, userID string, later Later, firing *time.Time) error {
	if later == nil {
		return nil
	}
	var u userDoc
	now := m.now()
	_, found, err := m.get(ctx, userKey(userID), &u)
	if err != nil || !found || u.PendingTurns == 0 {
		return err
	}
	if firing != nil && !u.SummaryDue.Equal(*firing) || firing == nil && jobWaits(&u, now) {
		return nil // a job is set to fire
	}
	return m.moveJob(ctx, userID, later, max(m.cfg.SummaryDebounce-now.Sub(u.LastTurnAt), time.Millisecond))
}

// moveJob schedules the user's summary job after the given time and
// records when it is due.
func (m *Memory) moveJob(ctx context.Context, userID string, later Later, after time.Duration) error {
	now := m.now()
	if err := m.schedule(ctx, later, after); err != nil {
		return err
	}
	var u userDoc
	return m.update(ctx, userKey(userID), &u, func(found bool) error {
		if !found || u.PendingTurns == 0 {
			return errSkip
		}
		u.SummaryDue = now.Add(after)
		return nil
	})
}

// appendWait bounds how long a summary waits for the history to hold the
// turn counted last (Summarize): longer than a conversation event's
// redelivery after the memory failed to apply it (Dapr's Redis Streams
// pub/sub claims a message a minute after its delivery).
const appendWait = 2 * time.Minute

// appended reports whether the history's recent entries hold the event the
// user counted last (none counted: nothing to wait for).
func appended(u *userDoc, recent []contract.Entry) bool {
	if len(u.Counted) == 0 {
		return true
	}
	last := u.Counted[len(u.Counted)-1]
	return slices.ContainsFunc(recent, func(e contract.Entry) bool { return e.EventID == last })
}

// Summarize is the user's summary job: once the user's turns have paused
// for SummaryDebounce it makes the summary from the latest session's recent
// history when turns wait for it (Apply counted them), and answers it and
// that session, or done false when none waited. Before the pause it moves
// the job to the pause's end. Turns applied while the model wrote the
// summary stay counted, with a job of their own.
func (m *Memory) Summarize(ctx context.Context, userID string, summarize Summarizer, later Later) (summary, sessionID string, done bool, err error) {
	var u userDoc
	if _, found, err := m.get(ctx, userKey(userID), &u); err != nil || !found || u.PendingTurns == 0 {
		return "", "", false, err
	}
	firing := u.SummaryDue
	if later != nil && m.now().Sub(u.LastTurnAt) < m.cfg.SummaryDebounce {
		return "", "", false, m.ensureJob(ctx, userID, later, &firing) // not quiet yet
	}
	seen, sessionID := u.PendingTurns, u.PendingSession
	var s sessionView
	if _, _, err := m.get(ctx, sessionKey(sessionID), &s); err != nil {
		return "", "", false, err
	}
	recent, err := s.entries(sessionID, m.cfg.SummaryLast)
	if err != nil {
		return "", "", false, err
	}
	// Apply counts a turn (the user's document) before it appends it (the
	// session's): a crash between the two leaves the append to the event's
	// redelivery, and a summary made now would lack the turn and clear its
	// count. The job waits for the append, a pause at a time, for at most
	// appendWait after the turn.
	if later != nil && !appended(&u, recent) && m.now().Sub(u.LastTurnAt) < appendWait {
		m.log.Info("the summary waits for the history to hold the turn counted last", "user_id", userID, "session_id", sessionID)
		return "", "", false, m.moveJob(ctx, userID, later, max(m.cfg.SummaryDebounce, time.Second))
	}
	var use contract.Usage
	if summary, use, err = summarize(ctx, u.Profile, recent); err != nil {
		return "", "", false, err
	}
	now := m.now()
	if err := m.update(ctx, userKey(userID), &u, func(found bool) error {
		if !found {
			return errSkip // forgotten meanwhile
		}
		u.summarized(now, summary, use, seen, "")
		return nil
	}); err != nil {
		return "", "", false, err
	}
	if u.PendingTurns > 0 { // turns came while the model wrote
		if err := m.ensureJob(ctx, userID, later, &firing); err != nil {
			return "", "", false, err
		}
	}
	return summary, sessionID, true, nil
}
