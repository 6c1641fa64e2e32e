package loop

import (
	"runtime"
	"syscall"

	"github.com/valyala/bytebufferpool"

	"switchboard/loop/writev"
)

// drain is the writer: it takes the whole queue, writes it with one flush,
// and repeats until the queue is empty.
func (o *outbox) drain() {
	if o.fanIn {
		// A binary's frames come from many phones' read tasks. When this
		// writer starts for a single frame, yield once: read tasks already
		// runnable push theirs first and share this flush. Measured with 1,024
		// phones at 1 in flight: frames per writev 1.03 -> 1.75 overall (~7
		// per binary write), relay CPU per round trip -26% (4 interleaved
		// A/B rounds, no overlap). With nothing else runnable it returns at
		// once; a writer that starts with several frames does not yield.
		o.mu.Lock()
		lone := o.queue != nil && len(o.queue.frames) == 1
		o.mu.Unlock()
		if lone {
			runtime.Gosched()
		}
	}
	o.c.srv.counters.WritersActive.Add(1)
	defer o.c.srv.counters.WritersActive.Add(-1)
	for {
		o.mu.Lock()
		q := o.queue
		if q == nil {
			o.running = false
			final := o.state == outboxClosing
			o.mu.Unlock()
			if final {
				o.finish()
			}
			return
		}
		o.queue = nil
		o.held = false
		o.mu.Unlock()

		batch := q.frames
		start := monoNow()
		cost, unsent, err := o.write(batch)
		if err == nil {
			o.c.srv.counters.observeFlush(q, start)
		}
		o.c.srv.counters.Flushes.Add(1)
		o.c.srv.counters.FramesFlushed.Add(uint64(len(batch)))
		for _, b := range batch {
			putBuf(&framePool, b)
		}
		putQueue(q)
		o.mu.Lock()
		o.charged -= cost
		wake := o.parked && o.charged <= o.limit/uncongestedBelow
		if wake {
			o.parked = false
		}
		o.mu.Unlock()
		o.c.srv.counters.OutboxBytesQueued.Add(-int64(cost))
		if wake {
			o.c.srv.unpark(o.c)
		}
		if err != nil {
			// Leave running set: nothing more is written, and the close
			// callback frees whatever is pushed meanwhile. The frames of
			// this batch not written whole are lost with the connection.
			o.c.srv.counters.Drops[DropDiscardedOnClose].Add(uint64(unsent))
			o.c.writeFailed(err)
			return
		}
	}
}

// Writers send straight to the socket and never use netpoll's output
// buffer. Why: netpoll's buffer keeps its last node for the connection's
// life (512 B once a 260-byte frame has passed through it, a ninth of an
// idle connection's memory), copying every frame into it is pure overhead
// while the socket has room, which is nearly always, and what it holds is
// discarded when a read pause takes the socket out of netpoll (pause.go).
//
// A direct write must happen under the outbox's wmu with wclosed false: the
// close callback sets wclosed under wmu before netpoll closes the
// descriptor, whose number may then belong to a new connection.

// write sends batch with writev straight to the socket; when the socket is
// full it waits for room (waitwrite.go), up to WriteTimeout. On an error,
// unsent is how many frames of batch were not written whole.
func (o *outbox) write(batch []*bytebufferpool.ByteBuffer) (cost, unsent int, err error) {
	cost = batchCost(batch)
	o.wmu.Lock()
	if o.wclosed {
		o.wmu.Unlock()
		return cost, len(batch), errOutboxClosed
	}
	rest, skip, err := writev.Nonblocking(int(o.c.fd), batch, 0)
	o.wmu.Unlock()
	if err != nil || len(rest) == 0 {
		return cost, len(rest), err
	}
	unsent, err = o.writeWaiting(rest, skip)
	return cost, unsent, err
}

func batchCost(batch []*bytebufferpool.ByteBuffer) (cost int) {
	for _, b := range batch {
		cost += len(b.B) + OutboxItemOverhead
	}
	return cost
}

// writeFinalNow writes b, the connection's final frame, straight to the
// socket when the outbox is idle, then half-closes as finish does. What the
// kernel does not take at once goes to a writer. It reports false, leaving
// b to the caller, only when it could not take the writer's role (a writer
// is busy or the outbox is closing): then b must be queued with pushFinal.
func (o *outbox) writeFinalNow(b *bytebufferpool.ByteBuffer) bool {
	o.mu.Lock()
	if o.state != outboxOpen || o.running {
		o.mu.Unlock()
		return false
	}
	o.running = true // hold the writer's role: pushes meanwhile only queue
	o.mu.Unlock()
	n, err := 0, error(errOutboxClosed)
	o.wmu.Lock()
	if !o.wclosed {
		n, err = writev.One(int(o.c.fd), b)
	}
	o.wmu.Unlock()
	o.mu.Lock()
	o.dropQueuedLocked() // pushed after the close frame began: never sent
	o.state, o.after = outboxClosing, lingerClose
	if err != nil || n == len(b.B) {
		o.running = false
		o.mu.Unlock()
		putBuf(&framePool, b)
		if err != nil {
			o.c.writeFailed(err)
		} else {
			o.finish()
		}
		return true
	}
	b.B = b.B[:copy(b.B, b.B[n:])]
	o.appendLocked(b, monoNow())
	o.charged += len(b.B) + OutboxItemOverhead
	o.mu.Unlock()
	o.c.srv.counters.OutboxBytesQueued.Add(int64(len(b.B) + OutboxItemOverhead))
	go o.run() // the socket was full: a writer finishes the frame
	return true
}

// finish hands the connection to its close once the final frame is on the
// wire (close.go).
func (o *outbox) finish() { o.c.finalWritten(o.after) }

// shutdownWrite half-closes the socket: the peer reads everything written,
// then EOF. Under wmu and only while the socket is ours: once the close
// callback has run, the descriptor is closed and its number may already
// belong to a new connection.
func (o *outbox) shutdownWrite() {
	o.wmu.Lock()
	if !o.wclosed {
		_ = syscall.Shutdown(int(o.c.fd), syscall.SHUT_WR)
	}
	o.wmu.Unlock()
}
