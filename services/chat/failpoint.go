package main

import (
	"os"
	"path/filepath"
	"syscall"
)

// crashAt returns the failpoint of the fault suite: when <dir>/<name>.armed
// exists, it is consumed (renamed to .fired, so it fires once, also across
// the restart) and the process kills itself with SIGKILL at once — a crash
// exactly at that point of a turn.
func crashAt(dir string) func(name string) {
	return func(name string) {
		if !firesAt(dir, name)() {
			return // not armed (or another turn took it)
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not delivered synchronously; never go on
	}
}

// firesAt is a failpoint that does not crash: it reports whether
// <dir>/<name>.armed existed, consuming it (once, also across restarts).
// The warm-up's warmup_stuck is one.
func firesAt(dir, name string) func() bool {
	return func() bool {
		return dir != "" && os.Rename(filepath.Join(dir, name+".armed"), filepath.Join(dir, name+".fired")) == nil
	}
}
