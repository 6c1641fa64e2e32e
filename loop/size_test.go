package loop

import (
	"testing"
	"unsafe"
)

// Every connection, idle or not, carries one conn; docs/performance.md
// counts it in the bytes per idle connection. 320 is the allocator's size
// class it falls in: a field that pushes it past that costs 32 to 64 bytes on
// every connection, so it should be a deliberate, re-measured choice.
func TestConnStaysInItsSizeClass(t *testing.T) {
	const sizeClass = 320
	if got := unsafe.Sizeof(conn{}); got > sizeClass {
		t.Fatalf("conn is %d bytes, past the %d-byte size class measured in docs/performance.md", got, sizeClass)
	}
}
