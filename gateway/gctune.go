// The gateway's garbage collector settings: its GOGC, and a soft memory
// limit from its container's memory limit.

package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// tuneGC sets GOGC to gcPercent unless the environment sets GOGC, and, since a
// high GOGC lets the heap grow to several times what it keeps, a soft memory
// limit of 90% of the container's (cgroup) memory limit when there is one and
// GOMEMLIMIT is not set: near the limit the collector works harder instead of
// the process being killed.
func tuneGC(gcPercent int, log *slog.Logger) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if limit, ok := cgroupMemoryLimit("/sys/fs/cgroup"); ok {
			debug.SetMemoryLimit(limit / 10 * 9)
			log.Info("memory limit from the container", "limit_bytes", limit, "gomemlimit_bytes", limit/10*9)
		}
	}
}

// cgroupMemoryLimit reads the memory limit of this process's cgroup (v2
// memory.max, or v1 memory.limit_in_bytes) under root.
func cgroupMemoryLimit(root string) (int64, bool) {
	for _, f := range []string{"memory.max", "memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n >= 1<<60 { // "max", or v1's "unlimited" (a huge number)
			return 0, false
		}
		return n, true
	}
	return 0, false
}
