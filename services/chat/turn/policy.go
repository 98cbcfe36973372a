package turn

import (
	"fmt"
	"path"
	"strings"
)

// Policy says which tool calls wait for a user's decision: a tool whose
// MCP annotations do not say readOnlyHint, unless it matches AutoApprove;
// any that matches Require (which wins over AutoApprove). The patterns are
// server/tool, each part a path.Match pattern ("tools/*", "*/delete_*").
// The built-in tool never waits.
type Policy struct {
	AutoApprove []string // TOOLS_AUTO_APPROVE
	Require     []string // TOOLS_REQUIRE_APPROVAL
}

// ParsePatterns reads a comma-separated list of server/tool patterns.
func ParsePatterns(name, list string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(list, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		server, tool, ok := strings.Cut(p, "/")
		if !ok || server == "" || tool == "" || strings.Contains(tool, "/") {
			return nil, fmt.Errorf("%s: %q is not a server/tool pattern", name, p)
		}
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("%s: %q: %w", name, p, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// NeedsApproval reports whether a call of t waits for a decision.
func (p Policy) NeedsApproval(t Tool) bool {
	if t.Server == "" {
		return false
	}
	name := t.Server + "/" + t.Tool
	if matchAny(p.Require, name) {
		return true
	}
	if matchAny(p.AutoApprove, name) {
		return false
	}
	return !t.ReadOnly
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}
