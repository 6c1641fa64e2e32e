package loop

import (
	"strconv"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"

	"switchboard/wsframe"
)

// How a connection ends. Every way the relay ends one is a closeCause, and
// closeRules is the one place that says what each puts on the wire, whether
// a phone's binary hears of it, and which CloseReason (the metric label)
// counts it. The functions below are the only code that builds a close
// frame or counts a close; everyone else names a cause.
//
// A close the relay starts sends its frame, half-closes once the frame is
// written and waits up to CloseLinger for the peer's answer (lingerClose);
// the peer's answering close frame, or its FIN, ends the connection.
// A close the peer starts is echoed and the socket closed once the echo is
// written (hardClose). Whichever way, onClosed then releases what the
// connection held, exactly once.

// Close codes the relay sends: RFC 6455 section 7.4.1 (named as gobwas/ws
// names them where it does) and the relay's own 44xx codes (docs/protocol.md,
// "Close codes").
const (
	codeNormal        = uint16(ws.StatusNormalClosure)       // 1000
	codeGoingAway     = uint16(ws.StatusGoingAway)           // 1001
	codeProtocolError = uint16(ws.StatusProtocolError)       // 1002
	codePolicy        = uint16(ws.StatusPolicyViolation)     // 1008
	codeTooBig        = uint16(ws.StatusMessageTooBig)       // 1009
	codeInternal      = uint16(ws.StatusInternalServerError) // 1011
	codeRestart       = uint16(1012)                         // service restart: redial now
	codeTryAgainLater = uint16(1013)                         // overloaded: come back later
	codeNoServer      = uint16(4404)                         // no binary holds the server-id
	codeClaimed       = uint16(4409)                         // a live binary holds it (the daemon treats this as fatal)
	codePhonesAtCap   = uint16(4429)                         // the server-id has its most phones
)

// closeCause is one way the relay ends a connection.
type closeCause uint8

const (
	// The peer's doing, seen on its read side.
	causePeerClose        closeCause = iota // the peer sent a close frame: echoed
	causeProtocol                           // a WebSocket protocol violation
	causeTooBig                             // a message over MaxMessageBytes
	causeNotJSON                            // a phone message that is not one JSON value
	causeHandshakeTimeout                   // the request head not whole in HandshakeTimeout
	causeReadTimeout                        // a started message not whole in MessageReadTimeout
	causeHeartbeat                          // no pong in PongTimeout
	causeWriteFailed                        // a write failed or waited past WriteTimeout
	causePauseFailed                        // a paused socket could not wait for input

	// Routing between the two sides.
	causeBinaryGone    // a phone sent while its binary was gone
	causeBinaryBacklog // a phone's frame did not fit its binary's outbox
	causePhoneBacklog  // a phone's outbox overflowed
	causeBinaryAsked   // the binary's close directive for one of its phones

	// The registry's decisions.
	causeNoServer     // a phone named a server-id no binary holds
	causeClaimed      // a binary claimed a server-id a live binary holds
	causePhonesAtCap  // a phone over its server-id's phone cap
	causeReclaimed    // a new binary took the phone's server-id
	causeTakenOver    // the binary lost its server-id to a takeover probe
	causeGraceExpired // the phone's binary did not come back within GracePeriod
	causeLifetime     // the binary reached BinaryMaxLifetime

	// The relay's own state.
	causeShutdown     // the relay is draining
	causeMemoryBudget // the largest buffer holder when the relay reached MemoryBudgetBytes

	numCloseCauses
)

// closeRule is what one cause does.
type closeRule struct {
	reason CloseReason // counted under switchboard_closes_total{reason}
	// code and text are the close frame's; a cause whose code is given at
	// the call (the peer's echo, the binary's directive) leaves code 0.
	code uint16
	text string
	// drop: no close frame, the socket is closed at once (nothing can be
	// answered, or the socket cannot take it).
	drop bool
	// silent: a phone's binary gets no close notice for it (it asked for
	// this close, or is being closed too).
	silent bool
	// discard: frames still queued are dropped first (the peer is too slow
	// to want them, or their memory is what must come back).
	discard bool
	// answer: the peer closed first, so the socket closes as soon as the
	// frame is written (hardClose) instead of lingering for an answer.
	answer bool
	// direct: written from the closing goroutine straight to an idle
	// socket, so a drain of 10^5 connections starts no writer for each.
	direct bool
	// quiet: no log line per connection (the peer's own close needs no
	// explaining; a drain logs once for all).
	quiet bool
}

var closeRules = [numCloseCauses]closeRule{
	causePeerClose:        {reason: ClosePeer, answer: true, quiet: true},
	causeProtocol:         {reason: CloseProtocol, code: codeProtocolError},
	causeTooBig:           {reason: CloseTooBig, code: codeTooBig}, // text from MaxMessageBytes: closeText
	causeNotJSON:          {reason: CloseNotJSON, code: codeNormal},
	causeHandshakeTimeout: {reason: CloseHandshakeTimeout, drop: true},
	causeReadTimeout:      {reason: CloseReadTimeout, code: codePolicy, text: "message read timeout"},
	causeHeartbeat:        {reason: CloseHeartbeat, code: codeInternal, text: "heartbeat timeout"},
	causeWriteFailed:      {reason: CloseWriteFailed, drop: true},
	causePauseFailed:      {reason: ClosePauseFailed, drop: true},

	causeBinaryGone:    {reason: CloseBinaryGone, code: codeNormal},
	causeBinaryBacklog: {reason: CloseBinaryBacklog, code: codeInternal, text: "binary backlog full"},
	causePhoneBacklog:  {reason: ClosePhoneBacklog, code: codeInternal, text: "phone backlog full", discard: true},
	causeBinaryAsked:   {reason: CloseBinaryAsked, silent: true},

	causeNoServer:    {reason: CloseRegistry, code: codeNoServer, text: "no server with that id"},
	causeClaimed:     {reason: CloseRegistry, code: codeClaimed, text: "server-id already claimed"},
	causePhonesAtCap: {reason: CloseRegistry, code: codePhonesAtCap, text: "too many phones for server-id"},
	causeReclaimed:   {reason: CloseReclaimed, code: codeNoServer, text: "binary reclaimed server-id"},
	// The same text as a plain heartbeat timeout on purpose: to the
	// displaced daemon it is one (it missed the probe's ping), and the
	// reference relay words it so.
	causeTakenOver:    {reason: CloseTakenOver, code: codeInternal, text: "heartbeat timeout"},
	causeGraceExpired: {reason: CloseGraceExpired, code: codeNormal},
	// 1012 (service restart): the daemon redials at once, through the
	// balancer, and lands on the node its server-id hashes to.
	causeLifetime: {reason: CloseLifetime, code: codeRestart, text: "binary lifetime reached"},

	causeShutdown:     {reason: CloseShutdown, code: codeGoingAway, text: "shutting down", silent: true, direct: true, quiet: true},
	causeMemoryBudget: {reason: CloseMemoryBudget, code: codeTryAgainLater, text: "relay over memory budget", discard: true},
}

// tooBigText is the text of a 1009: the first size refused, as the
// reference relay words it.
func tooBigText(maxMessage int) string {
	return "read limited at " + strconv.Itoa(maxMessage+1) + " bytes"
}

// closeText is the text of cause's close frame.
func (s *Server) closeText(cause closeCause) string {
	if cause == causeTooBig {
		return s.tooBigReason // names the configured limit
	}
	return closeRules[cause].text
}

// close ends c for cause. Any goroutine may call it; only the first close of
// a connection has an effect.
func (c *conn) close(cause closeCause) { c.closeCode(cause, closeRules[cause].code) }

// closeCode is close with the code given: the peer's, echoed, or the one a
// binary's directive names (0: a close frame with no code).
func (c *conn) closeCode(cause closeCause, code uint16) {
	r := &closeRules[cause]
	if r.drop {
		c.drop(cause)
		return
	}
	if !c.startClosing(r.silent) {
		return
	}
	c.srv.counters.Closes[r.reason].Add(1)
	b := framePool.Get()
	b.B = wsframe.AppendClose(b.B, code, c.srv.closeText(cause))
	after := lingerClose
	if r.answer {
		after = hardClose
	}
	if !r.direct || !c.out.writeFinalNow(b) {
		c.out.pushFinal(b, after, r.discard)
	}
	if !r.quiet {
		c.srv.logClose(c, r.reason, code)
	}
}

// drop ends c for a cause with no close frame: counted unless the
// connection was already closing (then the close under way is the one
// counted), and the socket closed now.
func (c *conn) drop(cause closeCause) {
	if !c.state.closing.Load() {
		c.count(cause)
	}
	c.closeSocket()
}

// count counts a close whose socket the caller ends itself.
func (c *conn) count(cause closeCause) {
	c.srv.counters.Closes[closeRules[cause].reason].Add(1)
}

// endRead closes c from its own read side with the stream out of sync: no
// further input is looked at, and a phone leaves the registry now so its
// close notice goes out after its last forwarded frame.
func (c *conn) endRead(cause closeCause) {
	c.readDone = true
	c.endInSync(cause)
}

// endInSync is endRead for a close decided on a whole message, with the
// stream still frame-aligned: input stays parsed (data is ignored once
// closing), so the peer's answering close frame ends the connection at once
// instead of holding it until CloseLinger.
func (c *conn) endInSync(cause closeCause) {
	c.close(cause)
	c.leave()
}

// peerClosed handles the peer's close frame, on its read side.
func (c *conn) peerClosed(code uint16) {
	c.readDone = true
	if c.state.closing.Load() {
		// Our close frame is out and this is the answer: done.
		c.closeSocket()
		return
	}
	c.noticeCode = code
	c.closeCode(causePeerClose, code)
	c.leave()
}

// startClosing marks the close begun and reports whether this call began
// it. A phone parked for its busy binary (congestion.go) reads again from
// here, its data ignored: it must see the peer's answer to the close.
func (c *conn) startClosing(silent bool) bool {
	if !c.state.setClosing(silent) {
		return false
	}
	if c.state.park.Swap(parkNone) == parkWaiting {
		c.queueStep()
	}
	return true
}

// afterWrite is what the writer does once a connection's final frame is
// written.
type afterWrite uint8

const (
	// lingerClose half-closes the socket and waits up to CloseLinger for the
	// peer's close frame or FIN: closing at once risks an RST that destroys
	// the close frame before the peer reads it.
	lingerClose afterWrite = iota
	// hardClose closes at once: the peer has already sent its close frame.
	hardClose
)

// finalWritten runs on the writer once the final frame is on the wire.
func (c *conn) finalWritten(after afterWrite) {
	if after == hardClose {
		c.closeSocket()
		return
	}
	c.out.shutdownWrite()
	c.setDeadline(&c.lingerDue, c.wheelNow()+int64(c.srv.cfg.CloseLinger))
}

// writeFailed runs on the writer when a flush fails or times out.
func (c *conn) writeFailed(err error) {
	if err == errOutboxClosed {
		c.closeSocket() // the socket is gone already: nothing to count
		return
	}
	if !c.state.closing.Load() {
		c.srv.log.Debug("write failed", "role", c.role, c.addrs(), "err", err)
	}
	c.drop(causeWriteFailed)
}

// leave takes the connection out of the registry: a phone detaches (and its
// binary is told), a binary gives up its slot (and its phones are closed).
// It runs on the read side or in the close callback only.
func (c *conn) leave() {
	switch c.role {
	case rolePhone:
		c.detachPhone()
	case roleBinary:
		c.releaseSlot()
	}
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
