// Command daprd is the upstream Dapr sidecar (github.com/dapr/dapr/cmd/daprd,
// built with -tags stablecomponents) plus one component from upstream's
// allcomponents set: the SQLite name resolver.
//
// Why: the default self-hosted resolver, mDNS, announces app ids on the local
// network. Two stacks on one machine (make run beside make test, or parallel
// test packages), or two developers on one LAN, would then answer each
// other's service invocations. With SQLite each run resolves app ids from its
// own database file under its run directory, and nothing leaves loopback.
package main

import (
	"github.com/dapr/components-contrib/nameresolution/sqlite"
	"github.com/dapr/dapr/cmd/daprd/app"
	nrLoader "github.com/dapr/dapr/pkg/components/nameresolution"
)

func init() {
	// Same registration as upstream's cmd/daprd/components/nameresolution_sqlite.go.
	nrLoader.DefaultRegistry.RegisterComponent(sqlite.NewResolver, "sqlite")
}

func main() {
	app.Run()
}
