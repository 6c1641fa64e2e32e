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

// A pooled outbox queue exists only while frames are queued, but then one
// per busy connection; its inline room (queueInline) is sized to stay in
// the same 320-byte class.
func TestFrameQueueStaysInItsSizeClass(t *testing.T) {
	const sizeClass = 320
	if got := unsafe.Sizeof(frameQueue{}); got > sizeClass {
		t.Fatalf("frameQueue is %d bytes, past the %d-byte size class; shrink queueInline", got, sizeClass)
	}
}
