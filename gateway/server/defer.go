package server

import (
	"context"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// deferLimit bounds an operation's deferred fragments (@defer, each
// spread counted; GRAPHQL_MAX_DEFERRED) — each is a part of its own,
// written as soon as it is resolved — and refuses @defer on a request that
// did not ask for multipart/mixed: only that framing delivers the later
// parts (gqlgen's POST would answer the first one alone, silently).
type deferLimit struct{ max int }

var (
	_ graphql.HandlerExtension        = deferLimit{}
	_ graphql.OperationContextMutator = deferLimit{}
)

func (deferLimit) ExtensionName() string                   { return "DeferLimit" }
func (deferLimit) Validate(graphql.ExecutableSchema) error { return nil }

func (d deferLimit) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil {
		return nil
	}
	n := countDeferred(oc.Doc, oc.Operation.SelectionSet, map[string]bool{})
	switch {
	case n == 0:
		return nil
	case d.max <= 0:
		return badDefer("@defer is disabled on this gateway (GRAPHQL_MAX_DEFERRED=0)")
	case !strings.Contains(oc.Headers.Get("Accept"), "multipart/mixed"):
		return badDefer("@defer needs a request that accepts multipart/mixed (Accept: multipart/mixed;deferSpec=20220824, as Apollo Client sends)")
	case n > d.max:
		return badDefer("the operation defers %d fragments; at most %d", n, d.max)
	}
	return nil
}

func badDefer(format string, args ...any) *gqlerror.Error {
	err := gqlerror.Errorf(format, args...)
	err.Extensions = map[string]any{"code": "BAD_USER_INPUT"}
	return err
}

// countDeferred counts the fragments under set marked @defer (a named
// fragment spread twice, twice); onPath guards against a cycle.
func countDeferred(doc *ast.QueryDocument, set ast.SelectionSet, onPath map[string]bool) int {
	n := 0
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			n += countDeferred(doc, s.SelectionSet, onPath)
		case *ast.InlineFragment:
			if s.Directives.ForName("defer") != nil {
				n++
			}
			n += countDeferred(doc, s.SelectionSet, onPath)
		case *ast.FragmentSpread:
			if s.Directives.ForName("defer") != nil {
				n++
			}
			if onPath[s.Name] || doc == nil {
				continue
			}
			if f := doc.Fragments.ForName(s.Name); f != nil {
				onPath[s.Name] = true
				n += countDeferred(doc, f.SelectionSet, onPath)
				delete(onPath, s.Name)
			}
		}
	}
	return n
}
