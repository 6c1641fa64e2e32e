package loop

import (
	"github.com/gobwas/ws"

	"switchboard/envelope"
	"switchboard/wsframe"
)

// phoneMessage forwards one whole message from a phone to its binary as
// {"conn_id":…,"frame":…}. The message must be exactly one JSON value: it is
// spliced verbatim, so validation is what stops a phone forging a conn_id.
func (c *conn) phoneMessage(msg []byte) {
	if !envelope.Valid(msg) {
		c.endInSync(causeNotJSON)
		return
	}
	b, live := c.srv.reg.Binary(c.serverID)
	if !live || b != c.binary {
		// No binary to hear it: gone, in its grace window, or replaced.
		c.srv.counters.Drops[DropBinaryGone].Add(1)
		c.endInSync(causeBinaryGone)
		return
	}
	buf := framePool.Get()
	buf.B = wsframe.AppendServerHeader(buf.B, ws.OpText, envelope.ToBinarySize(c.connID, msg))
	buf.B = envelope.AppendToBinary(buf.B, c.connID, msg)
	switch b.out.push(buf, 0) {
	case pushed:
		c.srv.counters.PhoneToBinary.Add(1)
	case pushedCongested:
		c.srv.counters.PhoneToBinary.Add(1)
		c.srv.park(c, b) // this phone stops reading until b drains
	case pushOverflow:
		// The binary is not keeping up. This phone's frame cannot be queued,
		// so this phone ends (it may redial); the binary and its other phones
		// are untouched.
		c.srv.counters.Drops[DropBinaryBacklog].Add(1)
		c.endInSync(causeBinaryBacklog)
	case pushClosed:
		c.srv.counters.Drops[DropBinaryGone].Add(1)
		c.endInSync(causeBinaryGone)
	}
}

// sendToPhone queues frame, raw bytes from a binary's envelope, as one text
// frame to phone p. On overflow p is closed 1011 with its backlog discarded.
func (c *conn) sendToPhone(p *conn, frame []byte) bool {
	buf := framePool.Get()
	buf.B = wsframe.AppendServerHeader(buf.B, ws.OpText, len(frame))
	buf.B = append(buf.B, frame...)
	switch p.out.push(buf, 0) {
	case pushed, pushedCongested:
		c.srv.counters.BinaryToPhone.Add(1)
		return true
	case pushOverflow:
		c.srv.counters.Drops[DropPhoneBacklog].Add(1)
		p.close(causePhoneBacklog)
	default:
		c.srv.counters.Drops[DropPhoneClosing].Add(1)
	}
	return false
}

// detachPhone takes the phone out of the registry, once, and tells its
// binary with a close notice unless the binary asked for the close or the
// server-id now belongs to another binary. It runs on the phone's read task
// or close callback only, so the notice follows every frame the phone sent.
func (c *conn) detachPhone() {
	if c.detached || c.connID == "" {
		return
	}
	c.detached = true
	current := c.srv.reg.RemovePhone(c.serverID, c.connID, c)
	if current == nil || current != c.binary || c.state.noNotice.Load() {
		return
	}
	code := c.noticeCode
	if code == 0 {
		code = codeGoingAway // no close frame: TCP drop, bad message, or relay-side close
	}
	buf := framePool.Get()
	buf.B = wsframe.AppendServerHeader(buf.B, ws.OpText, envelope.CloseNoticeSize(c.connID, code))
	buf.B = envelope.AppendCloseNotice(buf.B, c.connID, code)
	if r := current.out.push(buf, noticeSlack); r == pushOverflow || r == pushClosed {
		// The binary is gone (its slot in grace), closing, or so far behind
		// that even noticeSlack is spent: it never learns this phone left.
		c.srv.counters.Drops[DropCloseNoticeLost].Add(1)
	}
}
