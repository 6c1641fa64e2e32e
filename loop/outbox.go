package loop

import (
	"errors"
	"runtime"
	"sync"
	"syscall"

	"github.com/valyala/bytebufferpool"

	"switchboard/loop/writev"
)

// outbox is a connection's bounded outbound queue. Any goroutine may push;
// one writer goroutine, started when the queue goes from empty to non-empty
// and gone once it is drained, writes everything queued with one writev. An idle connection therefore owns no
// goroutine and no queued buffer, and a peer that reads
// slowly blocks only its own writer, never the goroutine that pushed.
type outbox struct {
	c     *conn
	limit int    // budget in charged bytes
	run   func() // o.drain, bound once so `go o.run()` does not allocate
	fanIn bool   // many goroutines push here: a binary's outbox

	mu      sync.Mutex
	queue   *[]*bytebufferpool.ByteBuffer // frames to write; nil while there are none (queues.go)
	charged int                           // queued + being written, each frame at len + OutboxItemOverhead
	running bool
	heavy   bool // charged passed heavyOutboxBytes once: a memory budget candidate (budget.go)
	parked  bool // binary: phones wait for this outbox to drain (congestion.go)
	state   outboxState
	after   afterWrite // what to do once the final frame is written
	held    bool       // queue[0] is a 101 not yet taken by the writer

	// wmu is held while a writer uses the descriptor; the close callback
	// sets wclosed under it before the descriptor is closed, after which
	// its number may belong to another connection. (wclosed sits with the
	// other flags: conn's size class, size_test.go.)
	wclosed bool
	wmu     sync.Mutex
	waiter  *roomWaiter // a writer waiting for the socket to take more (waitwrite.go)
}

type outboxState uint8

const (
	outboxOpen    outboxState = iota
	outboxClosing             // a final frame is queued; data is refused
	outboxClosed              // the socket is gone
)

type pushResult uint8

const (
	pushed          pushResult = iota
	pushedCongested            // queued, and the outbox is now past congestedAbove (congestion.go)
	pushOverflow
	pushClosed
)

var errOutboxClosed = errors.New("connection closed")

func (o *outbox) init(c *conn, limit int) {
	o.c, o.limit = c, limit
	o.run = o.drain
}

// noBudget is the slack of a frame queued whatever the outbox holds: only
// for frames whose number is bounded by something other than the budget
// (the takeover probe's ping: one per probe).
const noBudget = -1

// push queues one whole frame and takes ownership of b in every case. slack
// lets small control messages exceed the budget by a bounded amount;
// noBudget queues b however full the outbox is. It never counts a drop:
// the caller knows what b was and counts it under its reason.
func (o *outbox) push(b *bytebufferpool.ByteBuffer, slack int) pushResult {
	cost := len(b.B) + OutboxItemOverhead
	o.mu.Lock()
	if o.state != outboxOpen {
		o.mu.Unlock()
		putBuf(&framePool, b)
		return pushClosed
	}
	if slack != noBudget && o.charged+cost > o.limit+slack {
		o.mu.Unlock()
		putBuf(&framePool, b)
		return pushOverflow
	}
	congested := o.charged+cost > o.limit/congestedAbove
	o.enqueueLocked(b, cost)
	if congested {
		return pushedCongested
	}
	return pushed
}

// pushFinal queues the connection's last frame (a close frame or an HTTP
// refusal), outside the budget, and refuses data from then on. With discard,
// frames still queued are dropped first. It reports false when a final frame
// was already queued or the socket is gone, and then frees b.
func (o *outbox) pushFinal(b *bytebufferpool.ByteBuffer, after afterWrite, discard bool) bool {
	o.mu.Lock()
	if o.state != outboxOpen {
		o.mu.Unlock()
		putBuf(&framePool, b)
		return false
	}
	if discard {
		o.dropQueuedLocked()
	}
	o.state, o.after = outboxClosing, after
	o.enqueueLocked(b, len(b.B)+OutboxItemOverhead)
	return true
}

// enqueueLocked appends b, starts the writer if none runs, and unlocks o.mu.
func (o *outbox) enqueueLocked(b *bytebufferpool.ByteBuffer, cost int) {
	o.appendLocked(b)
	o.charged += cost
	start := !o.running
	o.running = true
	heavy := !o.heavy && o.charged > heavyOutboxBytes
	o.heavy = o.heavy || heavy
	watched := o.heavy
	o.mu.Unlock()
	budget := o.c.srv.budget
	if heavy {
		budget.watch(o.c)
	}
	o.c.srv.counters.OutboxBytesQueued.Add(int64(cost))
	if watched {
		// Only an outbox the budget may close needs to look at the total:
		// the others' pushes skip three loads of contended counters.
		budget.enforce()
	}
	if start {
		go o.run()
	}
}

// pushHeld queues b (the 101) without starting the writer: frames other
// goroutines push meanwhile queue behind it and start no writer either, and
// nothing is written until release. The handshake uses it so the registry
// decision is made before the 101 can reach the client.
func (o *outbox) pushHeld(b *bytebufferpool.ByteBuffer) {
	cost := len(b.B) + OutboxItemOverhead
	o.mu.Lock()
	o.appendLocked(b)
	o.charged += cost
	o.running = true // the writer release starts
	o.held = true
	o.mu.Unlock()
	o.c.srv.counters.OutboxBytesQueued.Add(int64(cost))
}

// release starts the writer held by pushHeld.
func (o *outbox) release() { go o.run() }

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
		lone := o.queue != nil && len(*o.queue) == 1
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

		batch := *q
		cost, unsent, err := o.write(batch)
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
	o.appendLocked(b)
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

// dropQueuedLocked frees every queued frame except a held 101, which must
// still precede the close frame that follows. Each frame freed was queued
// and will never be written: it is counted as DropDiscardedOnClose (the
// frames a writer has already taken are on their way and are not).
func (o *outbox) dropQueuedLocked() {
	if o.queue == nil {
		return
	}
	q := *o.queue
	keep := 0
	if o.held {
		keep = 1
	}
	freed := 0
	for i := keep; i < len(q); i++ {
		freed += len(q[i].B) + OutboxItemOverhead
		putBuf(&framePool, q[i])
		q[i] = nil
	}
	if n := len(q) - keep; n > 0 {
		o.charged -= freed
		o.c.srv.counters.OutboxBytesQueued.Add(-int64(freed))
		o.c.srv.counters.Drops[DropDiscardedOnClose].Add(uint64(n))
	}
	*o.queue = q[:min(keep, len(q))]
	if len(*o.queue) == 0 {
		putQueue(o.queue)
		o.queue = nil
	}
}

// close runs in the connection's close callback: it frees what is queued and
// fences the writer off the descriptor before it is closed. It reports
// whether the memory budget watches this outbox.
func (o *outbox) close() (heavy, parked bool) {
	o.mu.Lock()
	heavy, parked = o.heavy, o.parked
	o.parked = false
	o.state = outboxClosed
	o.held = false // the socket is gone: nothing is written any more
	o.dropQueuedLocked()
	o.mu.Unlock()
	o.wmu.Lock()
	o.wclosed = true
	if o.waiter != nil {
		o.waiter.wake() // a writer waiting for room gives up now
	}
	o.wmu.Unlock()
	return heavy, parked
}
