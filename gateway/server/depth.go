package server

import (
	"context"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// maxIntrospectionDepth bounds the introspection fields (__schema, __type).
// The standard introspection query of graphql-js (getIntrospectionQuery,
// which GraphiQL, Apollo Sandbox and graphql-codegen send) is 15 levels deep
// with every option; a hostile __type { ofType { ofType … } } stays bounded.
const maxIntrospectionDepth = 20

// depthLimit refuses operations nested deeper than max (fragments
// included). Introspection fields are measured apart, against
// maxIntrospectionDepth: the schema's own shape is deeper than any query of
// the API needs to be.
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
	w := walker{doc: oc.Doc, seen: map[string]bool{}}
	if w.depth(oc.Operation.SelectionSet, 1, d.max) > d.max {
		return tooDeep("the operation is nested deeper than %d levels", d.max)
	}
	if w.introspectionDepth(oc.Operation.SelectionSet) > maxIntrospectionDepth {
		return tooDeep("the introspection query is nested deeper than %d levels", maxIntrospectionDepth)
	}
	return nil
}

func tooDeep(format string, n int) *gqlerror.Error {
	err := gqlerror.Errorf(format, n)
	err.Extensions = map[string]any{"code": "BAD_USER_INPUT"}
	return err
}

// isMeta reports whether a field is an introspection field with a selection
// (__schema, __type); __typename is a leaf like any other.
func isMeta(f *ast.Field) bool { return strings.HasPrefix(f.Name, "__") && len(f.SelectionSet) > 0 }

type walker struct {
	doc  *ast.QueryDocument
	seen map[string]bool // fragments on the current path (a cycle is counted once)
}

// depth returns the depth of a selection set, stopping early past limit;
// introspection fields count as leaves (introspectionDepth measures them).
func (w walker) depth(set ast.SelectionSet, level, limit int) int {
	return w.walk(set, level, limit, true)
}

// introspectionDepth returns the depth of the deepest introspection field
// of an operation, counted from the operation's root.
func (w walker) introspectionDepth(set ast.SelectionSet) int {
	deepest := 0
	w.eachRootField(set, func(f *ast.Field) {
		if isMeta(f) {
			deepest = max(deepest, w.walk(f.SelectionSet, 2, maxIntrospectionDepth, false))
		}
	})
	return deepest
}

// eachRootField calls fn for every field at the root, through fragments.
func (w walker) eachRootField(set ast.SelectionSet, fn func(*ast.Field)) {
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			fn(s)
		case *ast.InlineFragment:
			w.eachRootField(s.SelectionSet, fn)
		case *ast.FragmentSpread:
			if f := w.doc.Fragments.ForName(s.Name); f != nil && !w.seen[s.Name] {
				w.seen[s.Name] = true
				w.eachRootField(f.SelectionSet, fn)
				delete(w.seen, s.Name)
			}
		}
	}
}

func (w walker) walk(set ast.SelectionSet, level, limit int, metaAsLeaf bool) int {
	if level > limit {
		return level
	}
	deepest := level - 1
	for _, sel := range set {
		d := level - 1
		switch s := sel.(type) {
		case *ast.Field:
			d = level
			if len(s.SelectionSet) > 0 && !(metaAsLeaf && isMeta(s)) {
				d = w.walk(s.SelectionSet, level+1, limit, metaAsLeaf)
			}
		case *ast.InlineFragment:
			d = w.walk(s.SelectionSet, level, limit, metaAsLeaf)
		case *ast.FragmentSpread:
			if w.seen[s.Name] {
				continue
			}
			if f := w.doc.Fragments.ForName(s.Name); f != nil {
				w.seen[s.Name] = true
				d = w.walk(f.SelectionSet, level, limit, metaAsLeaf)
				delete(w.seen, s.Name)
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
