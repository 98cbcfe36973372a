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
		armed := filepath.Join(dir, name+".armed")
		if os.Rename(armed, filepath.Join(dir, name+".fired")) != nil {
			return // not armed (or another turn took it)
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not delivered synchronously; never go on
	}
}
