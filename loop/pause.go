package loop

import (
	"io"
	"slices"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
)

// Read backpressure. netpoll reads a socket whenever epoll says it is
// readable, whatever the relay does with the bytes; a peer that sends faster
// than the relay parses would grow its input buffer without limit
// (over 2 GiB in seconds on loopback), and netpoll v0.7.2 has no call to stop it. So a
// connection whose input held reaches MaxInputBufferBytes, or that has used
// two turns while other read tasks wait for a worker, is paused: its socket
// leaves netpoll for good (detach.go) and the relay reads it itself, one
// turn at a time on the read workers, never more than keeps its input within
// MaxInputBufferBytes. Between turns that find the kernel empty it waits on
// the Server's readyPoller (readypoll.go). The sender is slowed by TCP: the
// relay reads only as fast as it parses, so the kernel's receive buffer
// (clamped once paused) fills and the window closes. Nothing is dropped,
// split or reordered by a pause, and a paused connection's turns queue
// behind other connections' read tasks, so a flood cannot starve them.

// readTurnBytes is how much input one connection's read task handles before
// it checks whether it should step aside. At ~1-2 GB/s of parsing it is
// tens of microseconds of a worker, so a task waiting behind a flooding
// connection waits about that long, not for as long as the flood lasts.
const readTurnBytes = 64 << 10

// yieldAfter is how much input one call of a read task handles before it
// steps aside for waiting tasks: two turns. A binary's ordinary fan-in (16
// phones × 16 messages in flight is ~80 KiB) stays under it and keeps
// netpoll's faster path; a flood passes it at once.
const yieldAfter = 2 * readTurnBytes

// overBudgetRead is the most a paused socket's turn reads while the relay is
// past its memory budget's high mark: a few small messages.
const overBudgetRead = 4 << 10

// budgetRecheck is how often a connection paused while the memory budget is
// over its high mark looks again (budget.go). Short against a human's
// patience, long against the cost of a look.
const budgetRecheck = 10 * time.Millisecond

// PauseReason says why a connection stopped reading; each is counted.
type PauseReason uint8

const (
	pauseNone       PauseReason = iota
	PauseInputFull              // its input held reached MaxInputBufferBytes
	PauseYield                  // it used two turns in one call while other read tasks waited
	PauseBudget                 // the relay's buffers are over the memory budget's high mark
	PauseBinaryBusy             // phone: its binary's outbox is more than half full (congestion.go)
	numPauseReasons
)

var pauseNames = [numPauseReasons]string{
	pauseNone:       "none",
	PauseInputFull:  "input_full",
	PauseYield:      "yield",
	PauseBudget:     "memory_budget",
	PauseBinaryBusy: "binary_busy",
}

func (r PauseReason) String() string { return pauseNames[r] }

// readPauser takes a socket out of netpoll's reading. It is the part of
// the pause that depends on netpoll's API: netpoll v0.7.2 has no pause
// call, so detachPauser (detach.go) builds one from Detach. A netpoll with
// PauseRead/ResumeRead would let a paused socket stay in netpoll instead,
// its turns taking input from netpoll's buffer rather than read(2).
type readPauser interface {
	// stop makes netpoll stop reading nc. It runs on c's read task, which
	// returns right after. It reports false when the socket is closing.
	stop(c *conn, nc netpoll.Connection) bool
	// stopped runs in the close callback netpoll calls for a stopping
	// connection. It returns once netpoll will add nothing more to nc's
	// input, every byte of which it has appended to c's staging buffer.
	stopped(c *conn, nc netpoll.Connection)
}

// shouldPause decides, between two turns of a read task, whether the
// connection should stop reading; held is the unparsed input it holds
// besides a message being reassembled, done what this call has handled.
func (c *conn) shouldPause(held, done int) PauseReason {
	if !c.upgraded || c.sock.Load() != sockLive {
		return pauseNone
	}
	if c.msg != nil {
		held += len(c.msg.B)
	}
	switch {
	case c.state.park.Load() == parkAsked:
		return PauseBinaryBusy
	case held >= c.srv.cfg.MaxInputBufferBytes:
		return PauseInputFull
	case c.srv.budget.overHigh():
		return PauseBudget
	case done >= yieldAfter && c.srv.tasks.Queued() > 0:
		return PauseYield
	}
	return pauseNone
}

// pause stops reading c. It runs on c's read task, which must return right
// after; the pause completes in c's close callback (onClosed → paused).
func (c *conn) pause(nc netpoll.Connection, why PauseReason) {
	if !c.sock.CompareAndSwap(sockLive, sockPausing) {
		return // closing: the close callback takes it from here
	}
	if !c.srv.pauser.stop(c, nc) {
		if !c.sock.CompareAndSwap(sockPausing, sockLive) {
			c.sock.Store(sockLive) // a close arrived meanwhile: through netpoll
			c.closeSocket()
		}
		return
	}
	c.srv.counters.Pauses[why].Add(1)
}

// paused runs in the close callback of a pausing connection: the read
// side owns the socket from here, and its first turn is queued.
func (c *conn) paused(nc netpoll.Connection) {
	c.noteUnread(0)
	c.srv.pauser.stopped(c, nc)
	c.srv.counters.PausedNow.Add(1)
	c.srv.ready.track(c)
	if !c.sock.CompareAndSwap(sockPausing, sockPaused) {
		c.endPaused() // a close arrived meanwhile
		return
	}
	c.srv.budget.watch(c)
	// The kernel's receive buffer is input the relay has not asked for:
	// clamping it once paused keeps what TCP lets in near the bound,
	// instead of tcp_rmem's maximum. Not before: a clamp on every socket
	// halved how well writes coalesce at 16 messages in flight (relay CPU
	// per round trip 3.5 -> 6.0 µs, bench Relay, interleaved).
	_ = syscall.SetsockoptInt(int(c.fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, max(c.srv.cfg.MaxInputBufferBytes/2, minReceiveBuffer))
	c.queueStep()
}

// minReceiveBuffer is the least SO_RCVBUF a pause sets: loopback's segments
// are 64 KiB, and a receive buffer below that (a small --max-message-bytes)
// nearly stops reading.
const minReceiveBuffer = 64 << 10

// queueStep queues one turn of a paused connection on the read workers.
func (c *conn) queueStep() {
	c.srv.tasks.RunLater(func() {
		if c.pausedStep() {
			c.queueStep()
		}
	})
}

// pausedStep is one turn of a paused connection on a read worker: it reads
// at most what keeps the input held within MaxInputBufferBytes (nothing
// while the relay is over its memory budget's high mark), and handles up to
// readTurnBytes of complete frames. It reports whether another turn should
// be queued; otherwise the connection waits for input, for the budget, or
// is closed.
func (c *conn) pausedStep() (again bool) {
	if c.srv.frozen.Load() && c.srv.parkTurn(c) {
		return false // a live upgrade's handover: Thaw runs it, or the successor reads
	}
	if c.closeAsked() {
		c.endPaused()
		return false
	}
	if c.state.park.CompareAndSwap(parkAsked, parkWaiting) {
		// The binary's writer queues the next turn (congestion.go). A
		// close asked since the look above found the phone not yet
		// waiting: take the turn back and act on it.
		if !c.closeAsked() || !c.state.park.CompareAndSwap(parkWaiting, parkNone) {
			return false
		}
		c.endPaused()
		return false
	}
	got, rerr := 0, error(nil)
	switch {
	case c.readDone:
		got, rerr = c.discardDirect() // input is ignored from here on
	case c.srv.budget.overHigh():
		// Past the budget's high mark a paused socket is read a trickle
		// at a time: a light peer's messages still get through, a flood
		// adds almost nothing.
		got, rerr = c.readDirect(min(overBudgetRead, c.srv.cfg.MaxInputBufferBytes-c.heldInput()))
	default:
		got, rerr = c.readDirect(c.srv.cfg.MaxInputBufferBytes - c.heldInput())
	}
	more := false
	if c.stage != nil && !c.readDone {
		var used int
		used, more = c.consume(c.stage.B, 0, readTurnBytes)
		if c.readDone {
			used = len(c.stage.B)
		}
		c.compactStage(used)
	}
	if c.upgraded && !c.readDone {
		c.trackMessage()
	}
	c.noteInputHeld()
	switch {
	case c.closeAsked():
		c.endPaused()
		return false
	case more:
		return true
	case got == overBudgetRead && c.srv.budget.overHigh():
		// A trickle while over the budget's high mark: the next one in a
		// while, so a flood adds at most overBudgetRead per budgetRecheck.
		time.AfterFunc(budgetRecheck, c.queueStep)
		return false
	case got > 0 && (got == readTurnBytes || c.heldInput() >= c.srv.cfg.MaxInputBufferBytes-readTurnBytes):
		return true // the kernel may hold more, or the read was cut short by the bound
	case got > 0 || rerr == syscall.EAGAIN:
		// A short read emptied the kernel: wait for more rather than spend
		// a read on finding nothing (arming reports data that came
		// meanwhile at once).
		if c.stage != nil && len(c.stage.B) == 0 {
			c.keepTail(nil) // nothing held: the buffer goes back to the pool
		}
		hook(hookBeforeArm, c)
		if err := c.srv.ready.arm(c); err != nil {
			c.count(causePauseFailed)
			c.endPaused()
		}
		return false
	case rerr != nil:
		// The peer hung up (EOF) or the socket failed: everything it sent
		// has been handled, as netpoll does on a hang-up.
		c.endPaused()
		return false
	}
	// Nothing read and nothing to parse: the relay is over its budget's
	// high mark. Look again shortly.
	time.AfterFunc(budgetRecheck, c.queueStep)
	return false
}

// endPaused closes a paused connection from its read side.
func (c *conn) endPaused() {
	c.srv.counters.PausedNow.Add(-1)
	c.srv.ready.forget(c)
	c.srv.budget.forget(c)
	c.closeOwned()
}

// heldInput is the input c holds besides netpoll's: staged and reassembled.
func (c *conn) heldInput() int {
	n := 0
	if c.stage != nil {
		n += len(c.stage.B)
	}
	if c.msg != nil {
		n += len(c.msg.B)
	}
	return n
}

// discardDirect reads and drops what the socket holds, one turn's worth.
func (c *conn) discardDirect() (int, error) {
	var sink [4 << 10]byte
	total := 0
	for total < readTurnBytes {
		n, err := syscall.Read(int(c.fd), sink[:])
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return total, err
		case n == 0:
			return total, io.EOF
		}
		total += n
	}
	return total, nil
}

// readDirect reads at most want bytes from the paused socket onto the end
// of the staging buffer. It returns syscall.EAGAIN when the kernel holds
// nothing, io.EOF when the peer has finished sending.
func (c *conn) readDirect(want int) (int, error) {
	want = min(want, readTurnBytes)
	if want <= 0 {
		return 0, nil
	}
	if c.stage == nil {
		c.stage = stagePool.Get()
	}
	c.stage.B = slices.Grow(c.stage.B, want)
	b := c.stage.B
	for {
		n, err := syscall.Read(int(c.fd), b[len(b):len(b)+want])
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		}
		c.stage.B = b[:len(b)+n]
		c.srv.counters.StagedBytes.Add(int64(n))
		c.srv.counters.DirectReadBytes.Add(uint64(n))
		return n, nil
	}
}

// compactStage drops the first used bytes of the staging buffer, keeping
// the buffer itself while the connection is paused (it is refilled at once).
// Within MaxInputBufferBytes the rest moves to the front, as the next read
// appends to it. A backlog past the bound (netpoll's read-ahead staged at
// the pause: megabytes under a flood) is stepped through instead, since
// nothing is read onto it until it is back under the bound: moving it every
// 64 KiB turn made the turns quadratic in its size (27 MB of pings took
// over 10 s under -race).
func (c *conn) compactStage(used int) {
	if used == 0 {
		return
	}
	bound := c.srv.cfg.MaxInputBufferBytes
	switch rest := c.stage.B[used:]; {
	case len(rest) > bound:
		c.stage.B = rest
	case len(c.stage.B) > bound:
		// Through the backlog: the rest moves to a buffer of its own and
		// the backlog's array goes to the GC, never to the pool, which
		// would keep all of it alive behind a short slice.
		b := stagePool.Get()
		b.B = append(b.B, rest...)
		c.stage = b
	default:
		c.stage.B = c.stage.B[:copy(c.stage.B, rest)]
	}
	c.srv.counters.StagedBytes.Add(-int64(used))
}

// noteUnread records how much input netpoll holds for c that the read side
// has not taken yet, for the memory budget. Only the read side calls it.
func (c *conn) noteUnread(n int) {
	n = min(n, 1<<30)
	if d := int64(n) - int64(c.unread); d != 0 {
		c.unread = int32(n)
		c.srv.counters.UnreadBytes.Add(d)
	}
	c.noteInputHeld()
}

// noteInputHeld publishes what c's input holds in all (netpoll's unread
// part, the staging buffer, a message being reassembled) for the memory
// budget's choice of the largest holder. Only the read side calls it.
func (c *conn) noteInputHeld() {
	n := int(c.unread)
	if c.stage != nil {
		n += len(c.stage.B)
	}
	if c.msg != nil {
		n += len(c.msg.B)
	}
	c.inputHeld.Store(int32(min(n, 1<<30)))
}
