package loop

import (
	"sync"
	"syscall"
	"unsafe"

	"github.com/cloudwego/netpoll"
	"github.com/valyala/bytebufferpool"
)

// Writers send straight to the socket and never use netpoll's output
// buffer. Why: netpoll's buffer keeps its last node for the connection's
// life (512 B once a 260-byte frame has passed through it, a ninth of an
// idle connection's memory), copying every frame into it is pure overhead
// while the socket has room, which is nearly always, and what it holds is
// discarded when a read pause takes the socket out of netpoll.
//
// A direct write must happen under the outbox's wmu with wclosed false: the
// close callback sets wclosed under wmu before netpoll closes the
// descriptor, whose number may then belong to a new connection.

// iovecBatch is the most frames one writev call carries; a longer batch
// takes several calls. It covers the coalescing measured at 16 messages in
// flight per phone (10-25 frames per flush) in one call, and a pooled array
// of it is 1 KiB.
const iovecBatch = 64

var iovecPool = sync.Pool{New: func() any { return new([iovecBatch]syscall.Iovec) }}

// socketFD is the descriptor under nc, or false where netpoll gives none.
func socketFD(nc netpoll.Connection) (int, bool) {
	fc, ok := nc.(interface{ Fd() int })
	if !ok {
		return 0, false
	}
	return fc.Fd(), true
}

// writevNonblocking writes bufs in order, the first from its byte skip on,
// until all is written or the socket is full. It returns what is left: the
// unwritten buffers, of which the first has its first skip bytes written. A
// full socket is not an error. bufs are only read; the caller keeps
// ownership.
func writevNonblocking(fd int, bufs []*bytebufferpool.ByteBuffer, skip int) (rest []*bytebufferpool.ByteBuffer, _ int, err error) {
	iov := iovecPool.Get().(*[iovecBatch]syscall.Iovec)
	defer iovecPool.Put(iov)
	for len(bufs) > 0 {
		n := 0
		for ; n < len(bufs) && n < iovecBatch; n++ {
			p := bufs[n].B
			if n == 0 {
				p = p[skip:]
			}
			iov[n] = syscall.Iovec{Base: unsafe.SliceData(p)}
			iov[n].SetLen(len(p))
		}
		w, _, errno := syscall.RawSyscall(syscall.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
		clear(iov[:n]) // no pooled array keeps frames reachable
		switch errno {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return bufs, skip, nil
		default:
			return bufs, skip, errno
		}
		for left := int(w); left > 0; {
			if r := len(bufs[0].B) - skip; left >= r {
				left -= r
				bufs, skip = bufs[1:], 0
			} else {
				skip += left
				left = 0
			}
		}
	}
	return nil, 0, nil
}

// writeOneNonblocking writes as much of b as the socket takes right now and
// returns how much that was.
func writeOneNonblocking(fd int, b *bytebufferpool.ByteBuffer) (int, error) {
	rest, skip, err := writevNonblocking(fd, []*bytebufferpool.ByteBuffer{b}, 0)
	if len(rest) == 0 {
		return len(b.B), err
	}
	return skip, err
}
