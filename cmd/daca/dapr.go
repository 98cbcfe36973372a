package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/daca-go/daca/internal/dev/toolchain"
)

// dapr builds the Dapr binaries once (make dapr).
func dapr(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("daca dapr", flag.ContinueOnError)
	root := fs.String("root", ".", "repository root")
	sentry := fs.Bool("sentry", false, "also build sentry (mTLS's certificate authority; the cluster runs it)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError(err.Error())
	}
	rootDir, err := filepath.Abs(*root)
	if err != nil {
		return err
	}
	ensure, built := toolchain.EnsureDapr, "daprd, placement, scheduler"
	if *sentry {
		ensure, built = toolchain.EnsureSentry, built+", sentry"
	}
	bins, err := ensure(ctx, rootDir, os.Stdout)
	if err != nil {
		return err
	}
	fmt.Printf("dapr %s: %s (%s)\n", toolchain.DaprVersion, bins.Dir, built)
	return nil
}
