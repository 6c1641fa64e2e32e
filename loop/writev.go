package loop

import (
	"sync"
	"syscall"
	"unsafe"

	"github.com/cloudwego/netpoll"
	"github.com/valyala/bytebufferpool"
)

// Writers send straight to the socket and use netpoll's output buffer only
// for what the kernel refuses. Why: netpoll's buffer keeps its last node for
// the connection's life (512 B once a 260-byte frame has passed through it,
// a ninth of an idle connection's memory), and copying every frame into it
// is pure overhead while the socket has room, which is nearly always.
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

// writevNonblocking writes bufs in order until all is written or the
// socket is full. It returns what is left: the unwritten buffers, of which
// the first has its first skip bytes written. A full socket is not an
// error. bufs are only read; the caller keeps ownership.
func writevNonblocking(fd int, bufs []*bytebufferpool.ByteBuffer) (rest []*bytebufferpool.ByteBuffer, skip int, err error) {
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
func writeOneNonblocking(nc netpoll.Connection, b *bytebufferpool.ByteBuffer) (int, error) {
	fd, ok := socketFD(nc)
	if !ok {
		return 0, nil
	}
	rest, skip, err := writevNonblocking(fd, []*bytebufferpool.ByteBuffer{b})
	if len(rest) == 0 {
		return len(b.B), err
	}
	return skip, err
}
