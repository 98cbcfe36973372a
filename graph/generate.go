// Package graph is the GraphQL schema of the gateway (schema.graphqls), the
// code gqlgen generates from it, and the resolvers, which only call a
// Backend and the live feeds, ports the gateway implements (ports.go).
package graph

//go:generate sh -c "cd .. && go tool gqlgen generate --config gqlgen.yml"
