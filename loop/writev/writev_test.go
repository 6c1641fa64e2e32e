package writev

import (
	"bytes"
	"fmt"
	"syscall"
	"testing"

	"github.com/valyala/bytebufferpool"
)

// A batch longer than one writev and larger than the socket takes: what
// Nonblocking reports as left, appended to what the peer read, must
// be the batch exactly, split at the right byte.
func TestWritevNonblockingStopsWhereTheSocketIsFull(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	for _, fd := range fds {
		if err := syscall.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
	}
	_ = syscall.SetsockoptInt(fds[0], syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)

	var batch []*bytebufferpool.ByteBuffer
	var want bytes.Buffer
	for i := range 3 * iovecBatch {
		b := &bytebufferpool.ByteBuffer{}
		b.B = fmt.Appendf(nil, "frame %04d %s|", i, bytes.Repeat([]byte{'x'}, 1000+i))
		want.Write(b.B)
		batch = append(batch, b)
	}
	rest, skip, err := Nonblocking(fds[0], batch, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) == 0 {
		t.Fatal("the whole batch fit: the test needs a full socket")
	}
	var got bytes.Buffer
	buf := make([]byte, 64<<10)
	for {
		n, err := syscall.Read(fds[1], buf)
		if err == syscall.EAGAIN {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got.Write(buf[:n])
	}
	if got.Len() == 0 {
		t.Fatal("nothing written before the socket was full")
	}
	got.Write(rest[0].B[skip:])
	for _, b := range rest[1:] {
		got.Write(b.B)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("written + left over is not the batch (%d vs %d bytes)", got.Len(), want.Len())
	}

	// With room again, the rest goes out whole.
	rest[0].B = rest[0].B[skip:]
	left, _, err := Nonblocking(fds[0], rest[:1], 0)
	if err != nil || len(left) != 0 {
		t.Fatalf("one frame into an empty socket: %d left, err %v", len(left), err)
	}
}

func TestWritevNonblockingReportsAClosedPeer(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	syscall.Close(fds[1])
	b := &bytebufferpool.ByteBuffer{B: []byte("hello")}
	if _, _, err := Nonblocking(fds[0], []*bytebufferpool.ByteBuffer{b}, 0); err != syscall.EPIPE {
		t.Fatalf("err = %v, want EPIPE", err)
	}
}

// socketpair is a connected pair of non-blocking stream sockets, closed
// when the test ends.
func socketpair(t *testing.T) [2]int {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		t.Cleanup(func() { syscall.Close(fd) })
		if err := syscall.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
	}
	return fds
}

// readAll reads what fd holds right now.
func readAll(t *testing.T, fd int) []byte {
	t.Helper()
	var got bytes.Buffer
	buf := make([]byte, 64<<10)
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EAGAIN {
			return got.Bytes()
		}
		if err != nil {
			t.Fatal(err)
		}
		got.Write(buf[:n])
	}
}

// A batch of more frames than one writev carries goes out whole, in order,
// the first frame from its skip on, and nothing of the caller's changes.
func TestWritevNonblockingSkipAcrossCalls(t *testing.T) {
	fds := socketpair(t)
	var batch []*bytebufferpool.ByteBuffer
	var want bytes.Buffer
	for i := range 2*iovecBatch + 3 {
		batch = append(batch, &bytebufferpool.ByteBuffer{B: fmt.Appendf(nil, "frame %d|", i)})
	}
	const skip = 3
	want.Write(batch[0].B[skip:])
	for _, b := range batch[1:] {
		want.Write(b.B)
	}
	concat := func() (all []byte) {
		for _, b := range batch {
			all = append(all, b.B...)
		}
		return all
	}
	before, orig := append([]*bytebufferpool.ByteBuffer(nil), batch...), concat()
	rest, left, err := Nonblocking(fds[0], batch, skip)
	if err != nil || len(rest) != 0 || left != 0 {
		t.Fatalf("rest %d, skip %d, err %v: want all written", len(rest), left, err)
	}
	if got := readAll(t, fds[1]); !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("peer read %q, want %q", got, want.Bytes())
	}
	for i, b := range batch {
		if b != before[i] {
			t.Fatalf("buffer %d replaced", i)
		}
	}
	if !bytes.Equal(concat(), orig) {
		t.Fatal("the buffers' bytes changed")
	}
}

// One reports how much of its buffer the socket took: all of it when
// there is room, the part the peer reads when there is not.
func TestOneReportsWhatTheSocketTook(t *testing.T) {
	fds := socketpair(t)
	small := &bytebufferpool.ByteBuffer{B: []byte("hello")}
	if n, err := One(fds[0], small); err != nil || n != len(small.B) {
		t.Fatalf("n=%d err=%v, want %d", n, err, len(small.B))
	}
	if got := readAll(t, fds[1]); string(got) != "hello" {
		t.Fatalf("peer read %q", got)
	}

	_ = syscall.SetsockoptInt(fds[0], syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
	big := &bytebufferpool.ByteBuffer{B: bytes.Repeat([]byte("0123456789"), 1<<16)}
	n, err := One(fds[0], big)
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 || n >= len(big.B) {
		t.Fatalf("n=%d of %d: the test needs a socket that takes part", n, len(big.B))
	}
	if got := readAll(t, fds[1]); !bytes.Equal(got, big.B[:n]) {
		t.Fatalf("peer read %d bytes, One reported %d", len(got), n)
	}
}
