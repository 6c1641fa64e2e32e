package loop

import (
	"os"
	"syscall"
	"time"

	"github.com/valyala/bytebufferpool"

	"switchboard/loop/writev"
)

// A writer whose socket is full waits for room on a duplicate of the
// descriptor registered with Go's own poller: an idle wait costs no CPU and
// no OS thread, and works the same whether netpoll is reading the socket or
// a read pause has taken it out of netpoll (pause.go), which netpoll's own
// Flush cannot. The duplicate exists only while the writer waits; the
// WriteTimeout deadline bounds the wait.

// roomWaiter is a writer's wait for its socket to take more.
type roomWaiter struct {
	f *os.File
}

// wake makes the wait end at once (the connection closed). Call it under
// the outbox's wmu.
func (w *roomWaiter) wake() { _ = w.f.SetWriteDeadline(time.Unix(1, 0)) }

// abortWait ends a writer's wait for room at once, failing its write.
func (o *outbox) abortWait() {
	o.wmu.Lock()
	if o.waiter != nil {
		o.waiter.wake()
	}
	o.wmu.Unlock()
}

// writeWaiting writes rest, the first buffer from byte skip on, waiting for
// room as often as the socket fills, up to WriteTimeout in all. On an error
// it reports how many buffers were not written whole.
func (o *outbox) writeWaiting(rest []*bytebufferpool.ByteBuffer, skip int) (unsent int, _ error) {
	o.c.srv.counters.WriteWaits.Add(1)
	o.wmu.Lock()
	if o.wclosed {
		o.wmu.Unlock()
		return len(rest), errOutboxClosed
	}
	dup, _, errno := syscall.RawSyscall(syscall.SYS_FCNTL, uintptr(o.c.fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		o.wmu.Unlock()
		return len(rest), os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", errno)
	}
	w := &roomWaiter{f: os.NewFile(dup, "socket")} // non-blocking, so Go polls it
	// The deadline is set before the waiter is published, so a wake (which
	// moves it to the past) cannot be overwritten.
	derr := w.f.SetWriteDeadline(time.Now().Add(o.c.srv.cfg.WriteTimeout))
	o.waiter = w
	o.wmu.Unlock()
	defer func() {
		o.wmu.Lock()
		o.waiter = nil
		o.wmu.Unlock()
		_ = w.f.Close()
	}()
	if derr != nil {
		return len(rest), derr
	}
	rc, err := w.f.SyscallConn()
	if err != nil {
		return len(rest), err
	}
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		rest, skip, werr = writev.Nonblocking(int(fd), rest, skip)
		return werr != nil || len(rest) == 0
	})
	if werr != nil {
		return len(rest), werr
	}
	if err != nil {
		return len(rest), err
	}
	return 0, nil
}
