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
	bins, err := toolchain.EnsureDapr(ctx, rootDir, os.Stdout)
	if err != nil {
		return err
	}
	fmt.Printf("dapr %s: %s (daprd, placement, scheduler)\n", toolchain.DaprVersion, bins.Dir)
	return nil
}
