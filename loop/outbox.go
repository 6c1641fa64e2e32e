package loop

import (
	"errors"
	"sync"

	"github.com/valyala/bytebufferpool"
)

// outbox is a connection's bounded outbound queue. Any goroutine may push;
// one writer goroutine, started when the queue goes from empty to non-empty
// and gone once it is drained, writes everything queued with one writev
// (writer.go). An idle connection therefore owns no goroutine and no queued
// buffer, and a peer that reads slowly blocks only its own writer, never the
// goroutine that pushed.
type outbox struct {
	c     *conn
	limit int    // budget in charged bytes
	run   func() // o.drain, bound once so `go o.run()` does not allocate
	fanIn bool   // many goroutines push here: a binary's outbox

	mu      sync.Mutex
	queue   *frameQueue // frames to write; nil while there are none
	charged int         // queued + being written, each frame at len + OutboxItemOverhead
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
	at := monoNow() // before the lock: pushers to a binary contend for it
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
	o.enqueueLocked(b, cost, at, upgradeStamp{})
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
	return o.pushFinalStamped(b, after, discard, upgradeStamp{})
}

// pushFinalStamped is pushFinal for a refusal that ends an upgrade attempt:
// its writer times the attempt once the refusal is written (latency.go).
func (o *outbox) pushFinalStamped(b *bytebufferpool.ByteBuffer, after afterWrite, discard bool, up upgradeStamp) bool {
	at := monoNow()
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
	o.enqueueLocked(b, len(b.B)+OutboxItemOverhead, at, up)
	return true
}

// enqueueLocked appends b, queued at at, starts the writer if none runs,
// and unlocks o.mu.
func (o *outbox) enqueueLocked(b *bytebufferpool.ByteBuffer, cost int, at int64, up upgradeStamp) {
	o.appendLocked(b, at)
	if up.began != 0 {
		o.queue.upgrade = up
	}
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
func (o *outbox) pushHeld(b *bytebufferpool.ByteBuffer, up upgradeStamp) {
	cost := len(b.B) + OutboxItemOverhead
	at := monoNow()
	o.mu.Lock()
	o.appendLocked(b, at)
	o.queue.upgrade = up // the 101 is the first frame: its write ends the upgrade
	o.charged += cost
	o.running = true // the writer release starts
	o.held = true
	o.mu.Unlock()
	o.c.srv.counters.OutboxBytesQueued.Add(int64(cost))
}

// release starts the writer held by pushHeld.
func (o *outbox) release() { go o.run() }

// dropQueuedLocked frees every queued frame except a held 101, which must
// still precede the close frame that follows. Each frame freed was queued
// and will never be written: it is counted as DropDiscardedOnClose (the
// frames a writer has already taken are on their way and are not).
func (o *outbox) dropQueuedLocked() {
	if o.queue == nil {
		return
	}
	q := o.queue.frames
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
	o.queue.frames = q[:min(keep, len(q))]
	o.queue.queuedAt = o.queue.queuedAt[:len(o.queue.frames)]
	if len(o.queue.frames) == 0 {
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

// frameQueue is what an outbox holds while it has frames queued: the
// frames, and for each when it was queued (switchboard_outbox_wait_seconds).
// The writer takes the whole queue and returns it here once written. An idle
// connection therefore keeps one nil pointer, and the timestamps cost
// nothing on it: they live in the pooled queue, not in conn.
type frameQueue struct {
	frames   []*bytebufferpool.ByteBuffer
	queuedAt []int64      // monoNow at each frame's push, parallel to frames
	upgrade  upgradeStamp // frames[0] is the 101 or refusal that ends an upgrade attempt

	// Room for the first queueInline frames and their times in the queue
	// itself: a queue new from the pool is one allocation, not three that
	// then grow step by step as frames arrive.
	frameRoom [queueInline]*bytebufferpool.ByteBuffer
	atRoom    [queueInline]int64
}

// queueInline covers a whole flush in the common cases: BenchmarkRelay
// measures about 2 frames per flush at 1 message in flight per phone and
// about 17 at 16, the latter on binaries' outboxes; past it the slices grow
// on the heap as before. 16 keeps the queue in the 320-byte size class.
const queueInline = 16

var queuePool = sync.Pool{New: func() any {
	q := new(frameQueue)
	q.frames, q.queuedAt = q.frameRoom[:0], q.atRoom[:0]
	return q
}}

// maxPooledQueue is the largest queue capacity put back in the pool: a
// backlog of small frames can grow a queue to many thousands of entries,
// and the pool should not keep that size for ever.
const maxPooledQueue = 1024

// appendLocked queues b, pushed at at, taking a queue from the pool if the
// outbox has none. o.mu must be held.
func (o *outbox) appendLocked(b *bytebufferpool.ByteBuffer, at int64) {
	if o.queue == nil {
		o.queue = queuePool.Get().(*frameQueue)
	}
	o.queue.frames = append(o.queue.frames, b)
	o.queue.queuedAt = append(o.queue.queuedAt, at)
}

// putQueue returns q, whose frames the caller has already released.
func putQueue(q *frameQueue) {
	if cap(q.frames) > maxPooledQueue {
		return
	}
	clear(q.frames)
	q.frames, q.queuedAt, q.upgrade = q.frames[:0], q.queuedAt[:0], upgradeStamp{}
	queuePool.Put(q)
}
