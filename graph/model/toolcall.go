package model

import "github.com/daca-go/daca/internal/contract"

// ToolCallOf is a tool call as clients see it (chatStream's chunks and the
// history's messages).
func ToolCallOf(c contract.ToolCall) *ToolCall {
	t := &ToolCall{Name: c.Name, Arguments: c.Arguments, Status: ToolCallStatus(c.Status)}
	if !t.Status.IsValid() {
		t.Status = ToolCallStatusCompleted // older pieces and entries had no status: they came with their result
		if c.Result == "" {
			t.Status = ToolCallStatusRunning
		}
	}
	if c.ID != "" {
		t.ID = &c.ID
	}
	if c.Server != "" {
		t.Server = &c.Server
	}
	if c.Result != "" {
		t.Result = &c.Result
	}
	if c.Approval != nil {
		t.Approval = ApprovalOf(*c.Approval)
	}
	return t
}
