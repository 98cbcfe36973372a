package turn

import "testing"

func TestPolicy(t *testing.T) {
	t.Parallel()
	auto, err := ParsePatterns("TOOLS_AUTO_APPROVE", "tools/create_*, extra/*")
	if err != nil {
		t.Fatal(err)
	}
	require, err := ParsePatterns("TOOLS_REQUIRE_APPROVAL", "tools/list_notes,extra/wipe")
	if err != nil {
		t.Fatal(err)
	}
	p := Policy{AutoApprove: auto, Require: require}
	tests := []struct {
		tool Tool
		want bool
	}{
		{Builtin, false},
		{Tool{Server: "tools", Tool: "convert_units", ReadOnly: true}, false},
		{Tool{Server: "tools", Tool: "delete_note"}, true},
		{Tool{Server: "tools", Tool: "create_note"}, false},               // auto-approved
		{Tool{Server: "tools", Tool: "list_notes", ReadOnly: true}, true}, // required
		{Tool{Server: "extra", Tool: "wipe"}, true},                       // required wins
		{Tool{Server: "extra", Tool: "other"}, false},
	}
	for _, tt := range tests {
		if got := p.NeedsApproval(tt.tool); got != tt.want {
			t.Errorf("%s/%s: %v; want %v", tt.tool.Server, tt.tool.Tool, got, tt.want)
		}
	}
	if (Policy{}).NeedsApproval(Tool{Server: "tools", Tool: "create_note"}) != true {
		t.Error("a tool without readOnlyHint needs approval by default")
	}
	for _, bad := range []string{"tools", "/x", "tools/", "a/b/c", "tools/[x"} {
		if _, err := ParsePatterns("X", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
