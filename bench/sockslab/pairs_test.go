package main

import (
	"os"
	"syscall"
	"testing"
)

// openFDs is how many descriptors this process holds.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// Each kind opens n connected pairs (a byte written at one end is read at
// the other), registers both ends with epoll, and close gives every
// descriptor back; sockstat and meminfo parse on this kernel.
func TestPairsConnectAndClose(t *testing.T) {
	const n = 20
	for _, k := range []kind{tcpKind, unixKind} {
		before := openFDs(t)
		s, err := k.open(n, true)
		if err != nil {
			t.Fatalf("%s: %v", k.name, err)
		}
		if len(s.fds) != 2*n {
			t.Fatalf("%s: %d descriptors, want %d", k.name, len(s.fds), 2*n)
		}
		for i := 0; i < len(s.fds); i += 2 {
			if _, err := syscall.Write(s.fds[i], []byte{7}); err != nil {
				t.Fatalf("%s pair %d: write: %v", k.name, i/2, err)
			}
			b := make([]byte, 1)
			if m, err := syscall.Read(s.fds[i+1], b); m != 1 || b[0] != 7 {
				t.Fatalf("%s pair %d: read %d %v %v", k.name, i/2, m, b, err)
			}
		}
		s.close()
		if after := openFDs(t); after != before {
			t.Fatalf("%s: %d descriptors open after close, %d before", k.name, after, before)
		}
	}
	if _, err := readSockstat(); err != nil {
		t.Fatal(err)
	}
	if s, err := readSlab(); err != nil || s.total <= 0 {
		t.Fatalf("slab %+v, %v", s.total, err)
	}
}
