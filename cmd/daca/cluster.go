package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/daca-go/daca/internal/dev/netns"
	"github.com/daca-go/daca/internal/dev/stack"
	"github.com/daca-go/daca/internal/dev/toolchain"
)

// clusterNet is the network of make cluster: its namespaces and links are
// named daca-*, its hosts 10.77.0.1, .2, …
const (
	clusterPrefix = "daca"
	clusterSubnet = "10.77.0"
)

// cluster runs the system on several hosts of this machine (make cluster):
// network namespaces h1…hN each with every app and its sidecar, a placement
// server and a scheduler on each of the first three (Dapr's highly available
// control plane), Redis and sentry on one more host, mTLS between all of
// them. It stops everything and removes the hosts at the end (Ctrl-C); what
// a killed run left is removed by the next start.
func cluster(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("daca cluster", flag.ContinueOnError)
	root := fs.String("root", ".", "repository root")
	hosts := fs.Int("hosts", 3, "hosts with apps (the control plane runs on the first three)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError(err.Error())
	}
	if *hosts < 3 {
		return usageError("daca cluster: -hosts must be at least 3 (a Raft group and an etcd cluster of three)")
	}
	rootDir, err := filepath.Abs(*root)
	if err != nil {
		return err
	}
	if err := netns.Available(); err != nil {
		return fmt.Errorf("daca cluster: %w", err)
	}
	say := func(format string, a ...any) { fmt.Printf("daca: "+format+"\n", a...) }
	bins, err := toolchain.EnsureSentry(ctx, rootDir, os.Stdout)
	if err != nil {
		return err
	}
	secretsFile := filepath.Join(rootDir, "secrets.json")
	if err := ensureSecretsFile(rootDir, secretsFile, say); err != nil {
		return err
	}
	net, err := netns.Create(clusterPrefix, clusterSubnet, *hosts+1)
	if err != nil {
		return err
	}
	defer func() {
		if err := net.Remove(); err != nil {
			say("removing the hosts: %v", err)
		}
	}()
	var appHosts []string
	for _, h := range net.Hosts[:*hosts] {
		appHosts = append(appHosts, h.Name)
	}
	infra := net.Hosts[*hosts].Name
	runDir := filepath.Join(rootDir, ".run", "cluster")
	say("starting %d hosts (%s.1–%d), infra %s (logs in %s)", *hosts+1, clusterSubnet, *hosts+1, infra, filepath.Join(runDir, "logs"))
	st, err := stack.Start(ctx, stack.Config{
		Root:        rootDir,
		RunDir:      runDir,
		SecretsFile: secretsFile,
		Bins:        &bins,
		Cluster:     &stack.Cluster{Net: net, ControlPlane: appHosts[:3], Infra: infra, Sentry: bins.Sentry},
		Apps:        stack.ClusterApps(appHosts, append(passThrough(os.Environ()), "LOG_FORMAT=text")...),
		Out:         os.Stdout,
		Progress:    os.Stdout,
	})
	if err != nil {
		if ctx.Err() != nil {
			say("interrupted; everything started was stopped")
			return nil
		}
		return err
	}
	fmt.Println()
	st.PrintStatus(os.Stdout)
	fmt.Println()
	for _, h := range appHosts {
		if gw := st.App("gateway-" + h); gw != nil {
			fmt.Printf("GraphQL on %s: %s/graphql\n", h, gw.AppURL())
		}
	}
	fmt.Printf("Sentry at %s: mTLS on; an identity only for a token naming it (JWKS validator; tokens in %s)\n", st.SentryAddress(), st.SentryTokens())
	fmt.Println("Press Ctrl-C to stop everything and remove the hosts.")
	return runUntilStopped(ctx, st, "cluster", say, "stopping", "stopped; the hosts are removed")
}
