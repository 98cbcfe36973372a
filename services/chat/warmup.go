package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/daca-go/daca/services/chat/turn"
)

// sidecarStopper is the part of the Dapr client the way out uses: the
// sidecar's shutdown API (POST /v1.0/shutdown).
type sidecarStopper interface {
	Shutdown(ctx context.Context) error
}

// warmUp runs the workflow warm-up for at most timeout. When no warm-up
// workflow completes in that time, the sidecar is shut down before the
// error is returned (and the process exits): a Dapr 1.18.2 sidecar that
// never took in this app's workflow actor types (README, Known issues)
// stays that way however often the app alone restarts, and its healthz
// stays OK. On Kubernetes the shutdown ends the daprd container, which the
// kubelet starts again beside the app's; the cluster's supervisor does the
// same (make cluster).
//
// stuck is the fault suite's failpoint: when it fires, the warm-up acts as
// a stuck sidecar's does (nothing completes until the time is up).
func warmUp(ctx context.Context, c turn.WarmupClient, sidecar sidecarStopper, timeout time.Duration, stuck func() bool, log *slog.Logger) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var err error
	if stuck != nil && stuck() {
		log.Warn("failpoint warmup_stuck: the warm-up acts as with a sidecar that never runs a workflow", "timeout", timeout.String())
		<-wctx.Done()
		err = fmt.Errorf("workflow engine not ready: %w", wctx.Err())
	} else {
		err = turn.Warmup(wctx, c, 10*time.Second, log)
	}
	if err == nil || ctx.Err() != nil { // ready, or this process is being stopped anyway
		return err
	}
	log.Error("no workflow ran on the sidecar: shutting the sidecar down so that it starts again with this app (Kubernetes restarts its container)", "timeout", timeout.String(), "err", err)
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer scancel()
	if serr := sidecar.Shutdown(sctx); serr != nil {
		log.Warn("the sidecar did not take the shutdown", "err", serr)
	}
	return err
}
