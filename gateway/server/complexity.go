package server

import (
	"context"

	"github.com/99designs/gqlgen/complexity"
	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// complexityLimit refuses operations whose complexity (gqlgen's count)
// exceeds max, with gqlgen's COMPLEXITY_LIMIT_EXCEEDED. It is gqlgen's
// extension.FixedComplexityLimit without the statistics it keeps on every
// operation (a map and a struct each, which a subscription holds as long as
// it is open; nothing here reads them).
//
// The complexity of an operation without variables depends on its text
// alone: it is remembered by text (and operation name) for the operations
// that come again, as most do.
type complexityLimit struct {
	max    int
	schema graphql.ExecutableSchema
	known  *lru.LRU[int] // complexity by operation, for operations without variables
}

// knownComplexities is how many operations' complexities are remembered.
const knownComplexities = 1000

var (
	_ graphql.HandlerExtension        = (*complexityLimit)(nil)
	_ graphql.OperationContextMutator = (*complexityLimit)(nil)
)

func (*complexityLimit) ExtensionName() string { return "ComplexityLimit" }

func (c *complexityLimit) Validate(schema graphql.ExecutableSchema) error {
	c.schema = schema
	c.known = lru.New[int](knownComplexities)
	return nil
}

func (c *complexityLimit) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if n := c.complexity(ctx, oc); n > c.max {
		err := gqlerror.Errorf("operation has complexity %d, which exceeds the limit of %d", n, c.max)
		errcode.Set(err, "COMPLEXITY_LIMIT_EXCEEDED")
		return err
	}
	return nil
}

func (c *complexityLimit) complexity(ctx context.Context, oc *graphql.OperationContext) int {
	op := oc.Doc.Operations.ForName(oc.OperationName)
	if op == nil || len(op.VariableDefinitions) > 0 {
		return complexity.Calculate(ctx, c.schema, op, oc.Variables)
	}
	key := oc.OperationName + "\x00" + oc.RawQuery
	if n, ok := c.known.Get(ctx, key); ok {
		return n
	}
	n := complexity.Calculate(ctx, c.schema, op, oc.Variables)
	c.known.Add(ctx, key, n)
	return n
}
