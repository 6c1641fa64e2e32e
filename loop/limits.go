package loop

import "syscall"

// fdHeadroom is kept back from the open-file limit for the listener, the
// admin listener, logs, and connections still in their handshake.
const fdHeadroom = 256

// DefaultMaxConnections derives the connection cap from the process's
// open-file limit: every connection is one descriptor, and the relay must
// keep some for everything else or accept() starts failing for all.
func DefaultMaxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 1024
	}
	n := int(min(rl.Cur, 1<<30))
	head := max(fdHeadroom, n/10)
	if n-head < 1 {
		return 1
	}
	return n - head
}
