// Package writev writes batches of pooled buffers straight to a
// non-blocking socket with writev(2), as few calls as the batch takes, and
// stops without error where the socket is full, reporting what is left so
// the caller can wait for room and go on from that byte.
//
// The buffers are only read: the caller keeps ownership of every one,
// written or not, and must keep them unchanged during a call. The caller
// must also make sure the descriptor stays open and its own for the whole
// call: once closed, its number may belong to another connection.
package writev

import (
	"sync"
	"syscall"
	"unsafe"

	"github.com/valyala/bytebufferpool"
)

// iovecBatch is the most frames one writev call carries; a longer batch
// takes several calls. It covers the coalescing measured at 16 messages in
// flight per phone (10-25 frames per flush) in one call, and a pooled array
// of it is 1 KiB.
const iovecBatch = 64

var iovecPool = sync.Pool{New: func() any { return new([iovecBatch]syscall.Iovec) }}

// Nonblocking writes bufs in order, the first from its byte skip on, until
// all is written or the socket is full. It returns what is left: the
// unwritten buffers, of which the first has its first skip bytes written. A
// full socket is not an error. bufs are only read; the caller keeps
// ownership.
func Nonblocking(fd int, bufs []*bytebufferpool.ByteBuffer, skip int) (rest []*bytebufferpool.ByteBuffer, _ int, err error) {
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

// One writes as much of b as the socket takes right now and returns how
// much that was.
func One(fd int, b *bytebufferpool.ByteBuffer) (int, error) {
	rest, skip, err := Nonblocking(fd, []*bytebufferpool.ByteBuffer{b}, 0)
	if len(rest) == 0 {
		return len(b.B), err
	}
	return skip, err
}
