// Command daca runs the DACA system on one machine.
//
//	daca up     build what is missing, start Redis, Dapr placement and
//	            scheduler, and every app with its own daprd sidecar; wait
//	            until all are ready; stop everything on Ctrl-C
//	daca dapr   build the Dapr binaries (daprd, placement, scheduler) once
//	daca bench  measure the stack (internal/dev/bench)
//
// main only parses and dispatches: up.go and dapr.go call internal/dev/stack
// and internal/dev/toolchain, bench is internal/dev/bench.
// Every flag of `daca up` can also be set by the environment variable named
// in its help text.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/daca-go/daca/internal/dev/bench"
	"github.com/daca-go/daca/internal/dev/toolchain"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		var ue usageError
		var be bench.UsageError
		if errors.As(err, &ue) || errors.As(err, &be) {
			fmt.Fprintln(os.Stderr, err.Error())
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "daca:", err)
		os.Exit(1)
	}
}

type usageError string

func (u usageError) Error() string { return string(u) }

const usage = `usage: daca <command> [flags]

commands:
  up       run the whole system (Redis, Dapr placement and scheduler, apps with sidecars)
  cluster  run it on hosts of this machine (network namespaces; root): HA control plane, mTLS
  dapr     build the Dapr ` + toolchain.DaprVersion + ` binaries into .bin/ (first time only, about 5 minutes)
  bench    measure chat turns and memory reads end to end on a private stack

Run 'daca up -h' for the flags of up.`

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError(usage)
	}
	switch args[0] {
	case "up":
		return up(ctx, args[1:])
	case "dapr":
		return dapr(ctx, args[1:])
	case "cluster":
		return cluster(ctx, args[1:])
	case "bench":
		return bench.Run(ctx, args[1:])
	case "hop": // started by bench; not for people
		return bench.Hop(ctx, args[1:])
	case "-h", "--help", "help":
		fmt.Println(usage)
		return nil
	default:
		return usageError(fmt.Sprintf("daca: unknown command %q\n\n%s", args[0], usage))
	}
}
