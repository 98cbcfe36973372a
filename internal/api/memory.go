package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

// agent-memory-service's routes.
var (
	GetMemory          = Route{http.MethodGet, "/memories/{user_id}"}
	InitializeMemory   = Route{http.MethodPost, "/memories/{user_id}/initialize"}
	ForgetUser         = Route{http.MethodDelete, "/memories/{user_id}"}
	GetConversation    = Route{http.MethodGet, "/conversations/{session_id}"} // ?last=&user_id=
	GetContext         = Route{http.MethodGet, "/context/{user_id}"}          // ?session_id=&last=
	GetConversations   = Route{http.MethodPost, "/conversations/batch"}
	DeleteConversation = Route{http.MethodDelete, "/conversations/{session_id}"}
	GetOwner           = Route{http.MethodGet, "/owners/{session_id}"}
	ClaimSession       = Route{http.MethodPut, "/owners/{session_id}"}
	ListSessions       = Route{http.MethodGet, "/users/{user_id}/sessions"}
	GetUsage           = Route{http.MethodGet, "/usage/{user_id}"} // ?since=
	// ConversationEvents is where the sidecar delivers TopicConversations
	// (components/subscription-conversations.yaml names the same route).
	ConversationEvents = Route{http.MethodPost, "/conversations"}
	// SummaryJob is where the sidecar delivers the memory's Dapr jobs: a
	// user's summary made once the user's turns have paused (SUMMARY_DEBOUNCE).
	SummaryJob = Route{http.MethodPost, "/job/{job_name}"}
)

// Query parameters of GetConversation and GetContext.
const (
	QueryLast      = "last"
	QueryUserID    = "user_id"
	QuerySessionID = "session_id"
	QuerySince     = "since" // GetUsage: RFC 3339
)

// Memory is agent-memory-service's API.
type Memory struct{ Caller Caller }

func (m Memory) call(ctx context.Context, route Route, path string, in, out any) error {
	return call(ctx, m.Caller, contract.MemoryApp, route, path, "", in, out)
}

// Profile is GET /memories/{user_id}.
func (m Memory) Profile(ctx context.Context, userID string) (contract.Profile, error) {
	var p contract.Profile
	err := m.call(ctx, GetMemory, GetMemory.Path(userID), nil, &p)
	return p, err
}

// Initialize is POST /memories/{user_id}/initialize.
func (m Memory) Initialize(ctx context.Context, userID string, p contract.Profile) (contract.Profile, error) {
	var out contract.InitializeReply
	err := m.call(ctx, InitializeMemory, InitializeMemory.Path(userID), p, &out)
	return out.Metadata, err
}

// Forget is DELETE /memories/{user_id}: the number of sessions deleted.
func (m Memory) Forget(ctx context.Context, userID string) (int, error) {
	var out contract.ForgetReply
	err := m.call(ctx, ForgetUser, ForgetUser.Path(userID), nil, &out)
	return out.SessionsDeleted, err
}

// HistoryOptions narrow GET /conversations/{session_id}.
type HistoryOptions struct {
	Last   int    // the last entries only; 0: all
	UserID string // set: an empty history unless this user owns the session
}

// History is GET /conversations/{session_id}.
func (m Memory) History(ctx context.Context, sessionID string, o HistoryOptions) ([]contract.Entry, error) {
	path := GetConversation.Path(sessionID)
	sep := "?"
	if o.Last > 0 {
		path += sep + QueryLast + "=" + strconv.Itoa(o.Last)
		sep = "&"
	}
	if o.UserID != "" {
		path += sep + QueryUserID + "=" + o.UserID // a checked id: nothing to escape
	}
	var out contract.HistoryReply
	err := m.call(ctx, GetConversation, path, nil, &out)
	return out.History, err
}

// Context is GET /context/{user_id}: the user's profile and the last
// `last` entries of session (only if the user owns it) in one call. A
// memory service older than the route answers NotFound.
func (m Memory) Context(ctx context.Context, userID, sessionID string, last int) (contract.ContextReply, error) {
	path := GetContext.Path(userID) + "?" + QuerySessionID + "=" + sessionID // checked ids: nothing to escape
	if last > 0 {
		path += "&" + QueryLast + "=" + strconv.Itoa(last)
	}
	var out contract.ContextReply
	err := m.call(ctx, GetContext, path, nil, &out)
	return out, err
}

// Usage is GET /usage/{user_id}: what the user's LLM calls took from the
// start of since's UTC day on.
func (m Memory) Usage(ctx context.Context, userID string, since time.Time) (contract.UsageReply, error) {
	var out contract.UsageReply
	err := m.call(ctx, GetUsage, GetUsage.Path(userID)+"?"+QuerySince+"="+url.QueryEscape(since.UTC().Format(time.RFC3339)), nil, &out)
	return out, err
}

// Histories is POST /conversations/batch: several histories in one call (at
// most contract.MaxBatch), the last `last` entries of each when last > 0.
func (m Memory) Histories(ctx context.Context, sessionIDs []string, last int) (map[string][]contract.Entry, error) {
	var out contract.ConversationsReply
	if err := m.call(ctx, GetConversations, GetConversations.Path(), contract.ConversationsRequest{SessionIDs: sessionIDs, Last: last}, &out); err != nil {
		return nil, err
	}
	h := make(map[string][]contract.Entry, len(out.Conversations))
	for _, c := range out.Conversations {
		h[c.SessionID] = c.History
	}
	return h, nil
}

// DeleteConversation is DELETE /conversations/{session_id}; false for a
// session that does not exist.
func (m Memory) DeleteConversation(ctx context.Context, sessionID string) (bool, error) {
	err := m.call(ctx, DeleteConversation, DeleteConversation.Path(sessionID), nil, nil)
	if apperr.CodeOf(err) == apperr.NotFound {
		return false, nil
	}
	return err == nil, err
}

// Owner is GET /owners/{session_id}: the user a session belongs to, "" for
// a session nobody has started.
func (m Memory) Owner(ctx context.Context, sessionID string) (string, error) {
	var out contract.Owner
	err := m.call(ctx, GetOwner, GetOwner.Path(sessionID), nil, &out)
	if apperr.CodeOf(err) == apperr.NotFound {
		return "", nil
	}
	return out.UserID, err
}

// Claim is PUT /owners/{session_id}: it makes the session userID's, or fails
// Forbidden (not wrapping ErrSidecar) when another user owns it.
func (m Memory) Claim(ctx context.Context, sessionID, userID string) error {
	return m.call(ctx, ClaimSession, ClaimSession.Path(sessionID), contract.Owner{SessionID: sessionID, UserID: userID}, nil)
}

// Sessions is GET /users/{user_id}/sessions, most recently active first.
func (m Memory) Sessions(ctx context.Context, userID string) ([]contract.SessionInfo, error) {
	var out contract.SessionsReply
	err := m.call(ctx, ListSessions, ListSessions.Path(userID), nil, &out)
	return out.Sessions, err
}

// Health is the memory service's GET /health.
func (m Memory) Health(ctx context.Context) (contract.Health, error) {
	return health(ctx, m.Caller, contract.MemoryApp)
}
