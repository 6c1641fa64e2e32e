package loop

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/valyala/bytebufferpool"

	"switchboard/wsframe"
)

// deadlines are a connection's eight pending timer events (request head,
// message, ping, pong, takeover probe, close linger, grace window, binary
// lifetime), each a wheel time (see wheel.Wheel.At) or 0 when unset. Any
// goroutine may set one with setDeadline. The connection keeps one booking
// on the wheel, at the earliest of them (timerAt); when it fires, onTimer
// acts on every deadline that has passed and books the next.
type deadlines struct {
	timerAt   atomic.Int64 // what the wheel has booked for this connection
	headDue   atomic.Int64 // request head must be complete
	msgDue    atomic.Int64 // the message being received must be complete
	pingDue   atomic.Int64 // next heartbeat ping
	pongDue   atomic.Int64 // answer to the last ping is due
	probeDue  atomic.Int64 // takeover probe: a rival waits for our pong
	lingerDue atomic.Int64 // the peer's answer to our close is due
	graceDue  atomic.Int64 // departed binary: its slot's grace window ends
	lifeDue   atomic.Int64 // binary: its connection lifetime ends (BinaryMaxLifetime)
	graceGen  uint64       // departed binary: which window (set before grace is booked); before the upgrade: when the head began (latency.go)
	gone      atomic.Bool  // socket closed: only the grace deadline still matters
}

func (c *conn) setDeadline(d *atomic.Int64, at int64) {
	d.Store(at)
	c.srv.wheel.Book(c, at)
}

func (c *conn) wheelNow() int64 { return c.srv.wheel.At(time.Now()) }

// TimerAt and OnTimer make a connection a wheel.Entry.
func (c *conn) TimerAt() *atomic.Int64 { return &c.timerAt }
func (c *conn) OnTimer(now int64)      { c.onTimer(now) }

// onTimer runs on the wheel goroutine when the earliest booked deadline is
// due. It acts on every deadline that has passed and books the next.
func (c *conn) onTimer(now int64) {
	if c.srv.handedOff.Load() && c.gone.Load() {
		return // handed over to a live upgrade's successor, or a grace window it expires
	}
	if c.srv.frozen.Load() {
		// A live upgrade's handover: its deadlines travel as they are,
		// and a rollback acts on them a moment late.
		c.srv.wheel.Book(c, now+int64(handoverRecheck))
		return
	}
	var next int64
	due := func(d *atomic.Int64) bool {
		v := d.Load()
		if v == 0 {
			return false
		}
		if v <= now {
			d.Store(0)
			return true
		}
		if next == 0 || v < next {
			next = v
		}
		return false
	}
	// A departed binary's grace window outlives its socket.
	if due(&c.graceDue) {
		c.graceExpired()
	}
	if c.gone.Load() {
		if next != 0 {
			c.srv.wheel.Book(c, next)
		}
		return
	}
	cfg := &c.srv.cfg
	// Look at every deadline first, so each one not yet due counts in next.
	linger, head, msg, pong, life := due(&c.lingerDue), due(&c.headDue), due(&c.msgDue), due(&c.pongDue), due(&c.lifeDue)
	if (msg || pong) && c.state.park.Load() != parkNone {
		// A phone parked for its busy binary is not read (congestion.go):
		// its pong and the rest of its message wait unread in its socket
		// through no fault of its own. Its clocks start again.
		if msg {
			c.msgDue.Store(now + int64(cfg.MessageReadTimeout))
		}
		if pong {
			c.pongDue.Store(now + int64(cfg.PongTimeout))
		}
		msg, pong = false, false
		next = nonZero(nonZero(next, c.msgDue.Load()), c.pongDue.Load())
	}
	switch {
	case linger:
		c.closeSocket() // the peer never answered our close
		return
	case head:
		c.close(causeHandshakeTimeout) // nothing to answer: the request never arrived whole
		return
	case msg:
		c.close(causeReadTimeout)
	case pong:
		c.close(causeHeartbeat)
	case life:
		c.close(causeLifetime)
	}
	if due(&c.probeDue) {
		c.srv.probeExpired(c)
	}
	if due(&c.pingDue) && !c.state.closing.Load() {
		c.sendPing()
		if c.pongDue.Load() == 0 {
			c.pongDue.Store(now + int64(cfg.PongTimeout))
		}
		c.pingDue.Store(now + int64(cfg.HeartbeatInterval))
		next = min(nonZero(next, c.pongDue.Load()), c.pingDue.Load())
	}
	if next != 0 {
		c.srv.wheel.Book(c, next)
	}
}

func nonZero(a, b int64) int64 {
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return min(a, b)
}

// sendPing queues a heartbeat ping. A peer so far behind that even
// controlSlack is spent gets none (counted): it has not read what was sent
// before, and PongTimeout (or WriteTimeout) ends it all the same.
func (c *conn) sendPing() {
	b := framePool.Get()
	b.B = wsframe.AppendServerHeader(b.B, ws.OpPing, 0)
	c.pushControl(b, controlSlack, DropPingOverflow)
}

// sendProbePing queues the takeover probe's ping outside the budget: a
// holder that is alive but behind must still get the ping it is judged by,
// or a full outbox alone would hand its slot to a rival. One per probe, so
// what it adds is bounded (takeover.go).
func (c *conn) sendProbePing() {
	b := framePool.Get()
	b.B = wsframe.AppendServerHeader(b.B, ws.OpPing, 0)
	c.pushControl(b, noBudget, DropPingOverflow)
}

// pushControl queues a ping or pong and counts it if it is dropped: as
// overflow when the budget plus slack is spent, as discarded when the
// connection is already closing.
func (c *conn) pushControl(b *bytebufferpool.ByteBuffer, slack int, overflow DropReason) {
	switch c.out.push(b, slack) {
	case pushOverflow:
		c.srv.counters.Drops[overflow].Add(1)
	case pushClosed:
		c.srv.counters.Drops[DropDiscardedOnClose].Add(1)
	}
}

// startHeartbeat books the first ping. It lands at a random point in the
// last quarter of the interval, so connections that arrive together (a
// reconnect storm after a restart) do not ping together forever after.
func (c *conn) startHeartbeat() {
	iv := int64(c.srv.cfg.HeartbeatInterval)
	first := iv - rand.Int64N(iv/4+1)
	c.setDeadline(&c.pingDue, c.wheelNow()+first)
}

// startLifetime books the end of a binary's connection, when
// BinaryMaxLifetime is set: at a random point in [0.9, 1.1] × the lifetime
// after its claim, so binaries that arrived together leave spread out.
// Called wherever a binary's claim succeeds, next to startHeartbeat.
func (c *conn) startLifetime() {
	lt := int64(c.srv.cfg.BinaryMaxLifetime)
	if lt <= 0 || c.role != roleBinary {
		return
	}
	d := lt - lt/10 + rand.Int64N(lt/5+1)
	c.setDeadline(&c.lifeDue, c.wheelNow()+d)
}

// gotPong clears the heartbeat and answers a takeover probe waiting on us.
func (c *conn) gotPong() {
	c.pongDue.Store(0)
	if c.probeDue.Load() != 0 {
		c.srv.probeAnswered(c)
	}
}

// trackMessage keeps the message deadline: set when a read leaves part of a
// frame or of a fragmented message behind, cleared once none is pending.
// Idle time between messages is not bounded.
func (c *conn) trackMessage() {
	// A paused connection keeps an empty staging buffer between turns:
	// only bytes held mean a message is under way.
	pending := (c.stage != nil && len(c.stage.B) > 0) || c.msg != nil
	switch {
	case pending && c.msgDue.Load() == 0:
		c.setDeadline(&c.msgDue, c.wheelNow()+int64(c.srv.cfg.MessageReadTimeout))
	case !pending && c.msgDue.Load() != 0:
		c.msgDue.Store(0)
	}
}
