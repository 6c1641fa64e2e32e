package loop

import (
	"net/netip"
	"sync/atomic"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"
	"github.com/valyala/bytebufferpool"

	"switchboard/envelope"
)

type role uint8

const (
	roleNone role = iota
	roleBinary
	rolePhone
)

func (r role) String() string {
	switch r {
	case roleBinary:
		return "binary"
	case rolePhone:
		return "phone"
	}
	return "none"
}

// conn is the relay's state for one TCP connection. It doubles as the
// context netpoll hands back to every callback, so finding it costs a type
// assertion rather than a map lookup.
type conn struct {
	srv *Server
	// nc is netpoll's connection for the socket; once a pause has taken the
	// socket out of netpoll (pause.go) it is closed and only its addresses
	// are read. Other goroutines use fd, or reach nc through closeSocket,
	// which uses it only while the socket is live.
	nc  netpoll.Connection
	out outbox

	// Read side: touched only by the connection's read task, its close
	// callback and, while reading is paused, its paused steps, of which
	// only one ever runs at a time.
	stage    *bytebufferpool.ByteBuffer // incomplete request head or frame; while paused, all input held
	msg      *bytebufferpool.ByteBuffer // data frames of a fragmented message
	serverID string
	src      netip.Addr           // source: trusted X-Forwarded-For, PROXY header, or the peer (see source)
	connID   string               // phone: its conn_id
	binary   *conn                // phone: the binary it was attached to
	env      *envelope.FromBinary // binary: scratch for the envelope being routed

	fd          int32         // the socket's descriptor, the same across a pause
	unread      int32         // input netpoll held at the last look (noteUnread)
	inputHeld   atomic.Int32  // unread + staged + reassembled, for the memory budget
	sock        atomic.Uint32 // who owns the descriptor (socket.go)
	noticeCode  uint16        // phone: code of its close frame, for the close notice
	msgOp       ws.OpCode     // opcode of the message being reassembled
	role        role
	upgraded    bool
	readDone    bool // input is discarded from here on
	headOnly    bool // answering a HEAD request
	proxied     bool // the PROXY header is consumed
	detached    bool // phone: left the registry / binary: released its slot
	claimQueued bool // binary: its claim was queued on a takeover probe (takeover.go)

	// Shared: set by whichever goroutine decides the phone's fate.
	state connState

	deadlines
}

// connState is the part of a connection's fate any goroutine may decide.
type connState struct {
	closing  atomic.Bool   // a final frame is queued: inbound data is ignored
	noNotice atomic.Bool   // the binary asked for this phone's close
	park     atomic.Uint32 // phone: waiting for its binary's outbox to drain (congestion.go)
}

// setClosing reports whether this call was the one that began the close.
func (s *connState) setClosing(noNotice bool) (first bool) {
	if noNotice {
		s.noNotice.Store(true)
	}
	return s.closing.CompareAndSwap(false, true)
}

// startClosing marks the close begun and reports whether this call began
// it. A phone parked for its busy binary (congestion.go) reads again from
// here, its data ignored: it must see the peer's answer to the close.
func (c *conn) startClosing(noNotice bool) bool {
	if !c.state.setClosing(noNotice) {
		return false
	}
	if c.state.park.Swap(parkNone) == parkWaiting {
		c.queueStep()
	}
	return true
}

// closeWith sends a close frame with code and reason and ends the connection
// after the peer answers or CloseLinger passes. Any goroutine may call it;
// only the first call per connection has an effect. With discard, frames
// still queued are dropped (the peer is too slow to want them).
func (c *conn) closeWith(why CloseReason, code uint16, reason string, discard bool) {
	c.closeWithNotice(why, code, reason, discard, false)
}

func (c *conn) closeWithNotice(why CloseReason, code uint16, reason string, discard, noNotice bool) {
	if !c.startClosing(noNotice) {
		return
	}
	c.srv.counters.Closes[why].Add(1)
	b := framePool.Get()
	b.B = appendCloseFrame(b.B, code, reason)
	c.out.pushFinal(b, lingerClose, discard)
	c.srv.logClose(c, why, code)
}

// echoClose answers the peer's close frame and closes once it is written.
func (c *conn) echoClose(code uint16) {
	if !c.startClosing(false) {
		return
	}
	c.srv.counters.Closes[ClosePeer].Add(1)
	b := framePool.Get()
	b.B = appendCloseFrame(b.B, code, "")
	c.out.pushFinal(b, hardClose, false)
}

// writeFailed runs on the writer when a flush fails or times out.
func (c *conn) writeFailed(err error) {
	if !c.state.closing.Load() && err != errOutboxClosed {
		c.srv.counters.Closes[CloseWriteFailed].Add(1)
		c.srv.log.Debug("write failed", "role", c.role, "remote", c.src, "err", err)
	}
	c.closeSocket()
}

// startLinger bounds the wait for the peer's answer to our close.
func (c *conn) startLinger() {
	c.setDeadline(&c.lingerDue, c.wheelNow()+int64(c.srv.cfg.CloseLinger))
}

// onClosed is netpoll's close callback: the socket is gone, whoever closed
// it, or it is leaving netpoll for a read pause (pause.go). It never runs
// while the read task does.
func (c *conn) onClosed(nc netpoll.Connection) error {
	if c.sock.Load()&^sockCloseAsked == sockPausing {
		c.paused(nc)
		return nil
	}
	c.sock.Store(sockClosed)
	c.cleanup()
	return nil
}

// cleanup releases what the connection holds once its socket is gone.
func (c *conn) cleanup() {
	c.gone.Store(true)
	heavy, parked := c.out.close()
	if heavy {
		c.srv.budget.forget(c)
	}
	if parked {
		c.srv.unpark(c) // its phones read again (and find it gone)
	}
	c.releaseInput()
	c.noteUnread(0)
	c.leave()
	if c.upgraded {
		c.srv.live.Add(-1)
	}
}

func (c *conn) releaseInput() {
	if c.stage != nil {
		c.srv.counters.StagedBytes.Add(-int64(len(c.stage.B)))
		putBuf(&stagePool, c.stage)
		c.stage = nil
	}
	if c.msg != nil {
		c.srv.counters.StagedBytes.Add(-int64(len(c.msg.B)))
		putBuf(&msgPool, c.msg)
		c.msg = nil
	}
}
