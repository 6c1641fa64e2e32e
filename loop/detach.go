package loop

import "github.com/cloudwego/netpoll"

// detachPauser pauses reading with netpoll v0.7.2's public API:
//
//   - stop: Detach from inside the read task. netpoll takes the socket out
//     of epoll without closing it once the task returns, then runs the
//     connection's close callbacks, ours (onClosed → paused) first, and
//     after them frees its input buffer.
//   - stopped (in our close callback): a poller may still be finishing a
//     read from this socket that it began before the socket left epoll;
//     those bytes land in the input buffer that is about to be freed. The
//     poller fence (fence.go) waits until every poller is past such a read,
//     then every byte in the buffer is copied to the staging buffer.
//
// The socket never goes back to netpoll: handing it back
// (NewFDConnection) would let netpoll read ahead without limit again the
// moment the peer speeds up, before the read task can look. netpoll's
// output buffer, which Detach discards, is never used (outbox.go).
type detachPauser struct {
	fence *pollerFence
}

func (d detachPauser) stop(_ *conn, nc netpoll.Connection) bool {
	dn, ok := nc.(interface{ Detach() error })
	return ok && dn.Detach() == nil
}

func (d detachPauser) stopped(c *conn, nc netpoll.Connection) {
	d.fence.wait()
	r := nc.Reader()
	n := r.Len()
	if n == 0 {
		return
	}
	data, err := r.Peek(n)
	if err != nil {
		return
	}
	if c.stage == nil {
		c.stage = stagePool.Get()
	}
	c.stage.B = append(c.stage.B, data...)
	c.srv.counters.StagedBytes.Add(int64(n))
	_ = r.Skip(n)
	_ = r.Release()
}
