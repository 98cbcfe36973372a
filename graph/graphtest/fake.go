// Package graphtest holds fakes of the resolvers' ports for the gateway's
// tests (the resolvers' in graph, the HTTP surface's in gateway/server):
// Fake is an in-memory graph.Backend.
package graphtest

import (
	"context"
	"sync"
	"time"

	"github.com/daca-go/daca/graph"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

// Time is the timestamp of everything the fake holds.
var Time = time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)

// Fake is a Backend in memory. Err, when set, is returned by every call;
// ConvErr by Conversations alone. Set fields before the first call, or
// under Mu.
type Fake struct {
	Mu          sync.Mutex
	Profiles    map[string]contract.Profile
	History     map[string][]contract.Entry
	SessionList map[string][]contract.SessionInfo
	UsageOf     map[string]contract.UsageReply // Usage by user
	Runs        map[string]*contract.ChatRun
	Owners      map[string]string // session id → the user it belongs to
	Err         error
	ConvErr     error

	LastIn    graph.ChatInput // the input of the last SendMessage
	Batches   [][]string      // the session ids of each Conversations call
	Cancelled []string        // the turns CancelChat stopped
	// Approvals are the requests for a decision, by id.
	Approvals map[string]*contract.Approval
	Decided   []contract.Decision // the decisions DecideToolCall recorded
}

var _ graph.Backend = (*Fake)(nil)

// New returns a fake with one user, ana (profile, session s1 with two
// messages), and one completed turn chat-1 of hers.
func New() *Fake {
	reply := "hi ana"
	ts := Time
	return &Fake{
		Profiles: map[string]contract.Profile{"ana": {Name: "Ana", PreferredStyle: "formal", UserSummary: "likes Go"}},
		History: map[string][]contract.Entry{"s1": {
			{Role: contract.RoleUser, Content: "q", Timestamp: ts}, {Role: contract.RoleAssistant, Content: "a", Timestamp: ts}}},
		SessionList: map[string][]contract.SessionInfo{"ana": {{SessionID: "s1", UpdatedAt: ts, MessageCount: 2,
			LastMessage: &contract.Entry{Role: contract.RoleAssistant, Content: "a", Timestamp: ts}}}},
		Owners: map[string]string{"s1": "ana", "s-of-bo": "bo"},
		Runs: map[string]*contract.ChatRun{"chat-1": {InstanceID: "chat-1", Status: contract.RunCompleted, UserID: "ana", SessionID: "s1",
			Reply: &reply, Timestamp: &ts}},
		Approvals: map[string]*contract.Approval{"chat-2-r1-t1": {ID: "chat-2-r1-t1", InstanceID: "chat-2", SessionID: "s1", UserID: "ana",
			Server: "tools", Tool: "delete_note", Name: "tools_delete_note", CallID: "c1", Arguments: `{"id":"n1"}`,
			RequestedAt: ts, ExpiresAt: ts.Add(10 * time.Minute), Status: contract.ApprovalPending}},
	}
}

func (f *Fake) PendingApprovals(_ context.Context, userID string) ([]contract.Approval, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	out := []contract.Approval{}
	for _, a := range f.Approvals {
		if a.UserID == userID && a.Status == contract.ApprovalPending {
			out = append(out, *a)
		}
	}
	return out, f.Err
}

func (f *Fake) Approval(_ context.Context, id string) (*contract.Approval, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	a := f.Approvals[id]
	if a == nil || f.Err != nil {
		return nil, f.Err
	}
	cp := *a
	return &cp, nil
}

// DecideToolCall decides as chat-service does: the first decision stands.
func (f *Fake) DecideToolCall(_ context.Context, id string, d contract.Decision) (contract.Approval, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	a := f.Approvals[id]
	if a == nil {
		return contract.Approval{}, apperr.New(apperr.NotFound, "approval %s not found", id)
	}
	if a.Status == contract.ApprovalExpired {
		return *a, apperr.New(apperr.Invalid, "approval %s expired", id)
	}
	if a.Status == contract.ApprovalPending {
		a.Status, a.Reason, a.DecidedBy = contract.ApprovalDenied, d.Reason, d.DecidedBy
		if d.Approve {
			a.Status = contract.ApprovalApproved
		}
		f.Decided = append(f.Decided, d)
	}
	return *a, nil
}

func (f *Fake) err() error { f.Mu.Lock(); defer f.Mu.Unlock(); return f.Err }

func (f *Fake) Memory(_ context.Context, u string) (contract.Profile, error) {
	if p, ok := f.Profiles[u]; ok {
		return p, f.err()
	}
	return contract.DefaultProfile(u), f.err()
}

func (f *Fake) InitializeMemory(_ context.Context, _ string, p contract.Profile) (contract.Profile, error) {
	return p, f.err()
}

// Conversation numbers the entries as the memory service does (Seq, from
// 1 unless an entry has its own).
func (f *Fake) Conversation(_ context.Context, s string) ([]contract.Entry, error) {
	return numbered(f.History[s]), f.err()
}

func numbered(h []contract.Entry) []contract.Entry {
	out := make([]contract.Entry, len(h))
	for i, e := range h {
		if e.Seq == 0 {
			e.Seq = i + 1
		}
		out[i] = e
	}
	return out
}

func (f *Fake) Conversations(_ context.Context, ids []string, last int) (map[string][]contract.Entry, error) {
	f.Mu.Lock()
	f.Batches = append(f.Batches, ids)
	convErr := f.ConvErr
	f.Mu.Unlock()
	out := map[string][]contract.Entry{}
	for _, id := range ids {
		h := numbered(f.History[id])
		if last > 0 && len(h) > last {
			h = h[len(h)-last:]
		}
		out[id] = h
	}
	if convErr != nil {
		return nil, convErr
	}
	return out, f.err()
}

func (f *Fake) Sessions(_ context.Context, u string) ([]contract.SessionInfo, error) {
	return f.SessionList[u], f.err()
}

// Usage answers UsageOf[userID], counted from since's day.
func (f *Fake) Usage(_ context.Context, userID string, since time.Time) (contract.UsageReply, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	u := f.UsageOf[userID]
	u.UserID, u.Since = userID, since.UTC().Truncate(24*time.Hour)
	return u, f.Err
}

func (f *Fake) SessionOwner(_ context.Context, sessionID string) (string, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return f.Owners[sessionID], f.Err
}

func (f *Fake) ForgetUser(context.Context, string) (int, error) { return 1, f.err() }

func (f *Fake) DeleteConversation(context.Context, string) (bool, error) { return true, f.err() }

func (f *Fake) SendMessage(_ context.Context, in graph.ChatInput) (contract.ChatReply, error) {
	f.Mu.Lock()
	f.LastIn = in
	f.Mu.Unlock()
	return contract.ChatReply{UserID: in.UserID, Reply: "re: " + in.Text, InstanceID: "chat-9", Status: contract.RunCompleted,
		Metadata: contract.ReplyMetadata{SessionID: "s9", Timestamp: Time}}, f.err()
}

func (f *Fake) StartChat(_ context.Context, in graph.ChatInput) (contract.ChatRun, error) {
	return contract.ChatRun{InstanceID: "chat-2", Status: contract.RunPending, UserID: in.UserID, SessionID: "s2"}, f.err()
}

func (f *Fake) ChatRun(_ context.Context, id string) (*contract.ChatRun, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return f.Runs[id], f.Err
}

// CancelChat marks a running turn TERMINATED (Cancelled records it).
func (f *Fake) CancelChat(_ context.Context, id string) (*contract.ChatRun, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	r := f.Runs[id]
	if r == nil || f.Err != nil {
		return nil, f.Err
	}
	if !r.Terminal() {
		r.Status = contract.RunTerminated
		f.Cancelled = append(f.Cancelled, id)
	}
	cp := *r
	return &cp, nil
}

func (f *Fake) Health(context.Context) graph.BackendHealth {
	return graph.BackendHealth{Sidecar: "ok", Apps: map[string]string{contract.ChatApp: "ok", contract.MemoryApp: "ok"}, LLM: "offline"}
}

// Tools answers the built-in tool and one MCP tool.
func (f *Fake) Tools(context.Context) ([]contract.ToolInfo, error) {
	return []contract.ToolInfo{{Name: "get_current_time", Description: "Returns the current date and time in UTC.", ReadOnly: true},
		{Name: "tools_create_note", Server: "tools", Description: "Keep a note."}}, f.err()
}
