package loop

import (
	"bytes"
	"fmt"
	"syscall"
	"testing"

	"github.com/valyala/bytebufferpool"
)

// A batch longer than one writev and larger than the socket takes: what
// writevNonblocking reports as left, appended to what the peer read, must
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
	rest, skip, err := writevNonblocking(fds[0], batch, 0)
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
	left, _, err := writevNonblocking(fds[0], rest[:1], 0)
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
	if _, _, err := writevNonblocking(fds[0], []*bytebufferpool.ByteBuffer{b}, 0); err != syscall.EPIPE {
		t.Fatalf("err = %v, want EPIPE", err)
	}
}
