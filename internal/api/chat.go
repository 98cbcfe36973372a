package api

import (
	"context"
	"net/http"

	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

// chat-service's routes.
var (
	Chat       = Route{http.MethodPost, "/chat"} // waits for the reply
	ChatAsync  = Route{http.MethodPost, "/chat/async"}
	GetChatRun = Route{http.MethodGet, "/chat/{instance_id}"}
	CancelChat = Route{http.MethodPost, "/chat/{instance_id}/cancel"}
	ListTools  = Route{http.MethodGet, "/tools"}
	// The requests of tool calls that wait for a user's decision.
	PendingApprovals = Route{http.MethodGet, "/approvals/pending/{user_id}"}
	GetApproval      = Route{http.MethodGet, "/approvals/{approval_id}"}
	DecideApproval   = Route{http.MethodPost, "/approvals/{approval_id}/decision"}
)

// ChatService is chat-service's API.
type ChatService struct{ Caller Caller }

// Send is POST /chat: it starts a turn and waits for its reply. key, when
// set, is the Idempotency-Key: a request repeated with it joins the first
// one's turn.
func (c ChatService) Send(ctx context.Context, in contract.ChatRequest, key string) (contract.ChatReply, error) {
	var out contract.ChatReply
	err := call(ctx, c.Caller, contract.ChatApp, Chat, Chat.Path(), key, in, &out)
	return out, err
}

// Start is POST /chat/async: it starts a turn and answers at once.
func (c ChatService) Start(ctx context.Context, in contract.ChatRequest, key string) (contract.ChatStarted, error) {
	var out contract.ChatStarted
	err := call(ctx, c.Caller, contract.ChatApp, ChatAsync, ChatAsync.Path(), key, in, &out)
	return out, err
}

// Run is GET /chat/{instance_id}; nil for an unknown turn.
func (c ChatService) Run(ctx context.Context, instanceID string) (*contract.ChatRun, error) {
	return c.run(ctx, GetChatRun, instanceID)
}

// Cancel is POST /chat/{instance_id}/cancel: it stops the turn and answers
// its state; nil for an unknown turn.
func (c ChatService) Cancel(ctx context.Context, instanceID string) (*contract.ChatRun, error) {
	return c.run(ctx, CancelChat, instanceID)
}

func (c ChatService) run(ctx context.Context, route Route, instanceID string) (*contract.ChatRun, error) {
	var r contract.ChatRun
	err := call(ctx, c.Caller, contract.ChatApp, route, route.Path(instanceID), "", nil, &r)
	if apperr.CodeOf(err) == apperr.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// Tools is GET /tools: the tools the agent can use now.
func (c ChatService) Tools(ctx context.Context) ([]contract.ToolInfo, error) {
	var out contract.ToolsReply
	err := call(ctx, c.Caller, contract.ChatApp, ListTools, ListTools.Path(), "", nil, &out)
	return out.Tools, err
}

// PendingApprovals are the user's requests that wait for a decision,
// oldest first.
func (c ChatService) PendingApprovals(ctx context.Context, userID string) ([]contract.Approval, error) {
	var out contract.ApprovalsReply
	err := call(ctx, c.Caller, contract.ChatApp, PendingApprovals, PendingApprovals.Path(userID), "", nil, &out)
	return out.Approvals, err
}

// Approval reads a request; nil for an unknown one.
func (c ChatService) Approval(ctx context.Context, id string) (*contract.Approval, error) {
	var a contract.Approval
	err := call(ctx, c.Caller, contract.ChatApp, GetApproval, GetApproval.Path(id), "", nil, &a)
	if apperr.CodeOf(err) == apperr.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &a, nil
}

// Decide records a decision on a request and answers the request: the
// first decision when it had one already; an Invalid error when it expired
// or its turn was stopped.
func (c ChatService) Decide(ctx context.Context, id string, d contract.Decision) (contract.Approval, error) {
	var a contract.Approval
	err := call(ctx, c.Caller, contract.ChatApp, DecideApproval, DecideApproval.Path(id), "", d, &a)
	return a, err
}

// Health is chat-service's GET /health.
func (c ChatService) Health(ctx context.Context) (contract.Health, error) {
	return health(ctx, c.Caller, contract.ChatApp)
}
