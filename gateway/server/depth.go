package server

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// depthLimit refuses operations nested deeper than max (fragments included).
type depthLimit struct{ max int }

var (
	_ graphql.HandlerExtension        = depthLimit{}
	_ graphql.OperationContextMutator = depthLimit{}
)

func (depthLimit) ExtensionName() string                   { return "DepthLimit" }
func (depthLimit) Validate(graphql.ExecutableSchema) error { return nil }

func (d depthLimit) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil {
		return nil
	}
	if depth(oc.Operation.SelectionSet, oc.Doc, 1, d.max, map[string]bool{}) > d.max {
		err := gqlerror.Errorf("the operation is nested deeper than %d levels", d.max)
		err.Extensions = map[string]any{"code": "BAD_USER_INPUT"}
		return err
	}
	return nil
}

// depth returns the depth of a selection set, stopping early past limit.
func depth(set ast.SelectionSet, doc *ast.QueryDocument, level, limit int, seen map[string]bool) int {
	if level > limit {
		return level
	}
	deepest := level - 1
	for _, sel := range set {
		d := level - 1
		switch s := sel.(type) {
		case *ast.Field:
			d = level
			if len(s.SelectionSet) > 0 {
				d = depth(s.SelectionSet, doc, level+1, limit, seen)
			}
		case *ast.InlineFragment:
			d = depth(s.SelectionSet, doc, level, limit, seen)
		case *ast.FragmentSpread:
			if seen[s.Name] {
				continue
			}
			if f := doc.Fragments.ForName(s.Name); f != nil {
				seen[s.Name] = true
				d = depth(f.SelectionSet, doc, level, limit, seen)
				delete(seen, s.Name)
			}
		}
		if d > deepest {
			deepest = d
		}
		if deepest > limit {
			return deepest
		}
	}
	return deepest
}
