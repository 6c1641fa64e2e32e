package loop

import (
	"context"
	"errors"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"

	"switchboard/wsframe"
)

// onRequest is netpoll's read task for a connection. (A paused connection
// is read by its turns instead: pause.go.)
func (s *Server) onRequest(ctx context.Context, nc netpoll.Connection) error {
	return ctx.(*conn).onInput(nc)
}

// onInput consumes every buffered byte (netpoll calls again at once while
// input remains, so leaving any would spin), handles the
// complete units in place a turn at a time, and copies only an incomplete
// tail into the connection's staging buffer. When it must stop reading (its
// input held reached MaxInputBufferBytes, or other connections wait for a
// read worker) it keeps the rest too and pauses the socket (pause.go).
func (c *conn) onInput(nc netpoll.Connection) error {
	r := nc.Reader()
	n := r.Len()
	// Peek, then Skip: Next copies input spanning two buffer nodes into a
	// fresh allocation, Peek into a pooled one.
	data, err := r.Peek(n)
	if err != nil {
		return err
	}
	if c.stage != nil {
		c.stage.B = append(c.stage.B, data...)
		c.srv.counters.StagedBytes.Add(int64(len(data)))
		data = c.stage.B
	}
	used, stop := len(data), pauseNone
	if !c.readDone {
		used, stop = c.consumeTurns(data, r, n)
	}
	c.keepTail(data[used:])
	if c.upgraded && !c.readDone {
		c.trackMessage()
	}
	_ = r.Skip(n)
	err = r.Release()
	c.noteUnread(r.Len()) // what arrived while this ran
	if stop == pauseNone && used > 0 && c.upgraded {
		switch {
		case c.state.park.Load() == parkAsked:
			stop = PauseBinaryBusy
		case used >= readTurnBytes && c.srv.budget.overHigh():
			// Over the budget's high mark a connection that brought a
			// turn's worth pauses even with no turn waiting: what it
			// forwards adds to the relay's buffers. Light connections (a
			// calm phone's small messages) go on.
			stop = PauseBudget
			c.srv.budget.enforce()
		}
	}
	if stop != pauseNone {
		c.pause(nc, stop)
	}
	return err
}

// consumeTurns handles the complete units of data a turn (readTurnBytes)
// at a time. Between turns it asks whether the connection should stop
// reading, and if so returns how far it got and why.
func (c *conn) consumeTurns(data []byte, r netpoll.Reader, n int) (used int, stop PauseReason) {
	for {
		var more bool
		used, more = c.consume(data, used, used+readTurnBytes)
		if !more || c.readDone {
			return used, pauseNone
		}
		c.noteUnread(r.Len() - n)
		if stop = c.shouldPause(len(data)-used+r.Len()-n, used); stop != pauseNone {
			return used, stop
		}
	}
}

// keepTail leaves rest, the unconsumed end of this read, in the staging
// buffer, taking one from the pool only when there is a tail to keep.
func (c *conn) keepTail(rest []byte) {
	switch {
	case c.stage != nil:
		delta := len(rest) - len(c.stage.B)
		c.stage.B = c.stage.B[:copy(c.stage.B, rest)]
		c.srv.counters.StagedBytes.Add(int64(delta))
		if len(rest) == 0 {
			putBuf(&stagePool, c.stage)
			c.stage = nil
		}
	case len(rest) > 0:
		c.stage = stagePool.Get()
		c.stage.B = append(c.stage.B, rest...)
		c.srv.counters.StagedBytes.Add(int64(len(rest)))
	}
}

// consume handles the complete units of data from i on and returns how far
// it got. It stops at the first incomplete unit, or after the frame that
// takes it to limit or past it (more is then true: data may hold more
// complete frames).
func (c *conn) consume(data []byte, i, limit int) (used int, more bool) {
	if !c.upgraded {
		i = c.handshake(data)
		if c.readDone {
			return len(data), false // refused: nothing more is read
		}
		if !c.upgraded {
			return i, false
		}
	}
	for i < len(data) && !c.readDone {
		if i >= limit {
			return i, true
		}
		h, hn, err := wsframe.ParseHeader(data[i:])
		if err == nil && hn > 0 {
			err = wsframe.CheckClient(h)
		}
		if err != nil {
			c.protocolError(err)
			return len(data), false
		}
		if hn == 0 {
			break
		}
		if c.tooBig(h) {
			return len(data), false
		}
		end := i + hn + int(h.Length)
		if end > len(data) {
			break
		}
		payload := data[i+hn : end]
		ws.Cipher(payload, h.Mask, 0)
		i = end
		c.frame(h, payload)
		if c.state.park.Load() == parkAsked {
			return i, i < len(data) // its binary is congested: stop here
		}
	}
	if c.readDone {
		return len(data), false
	}
	return i, false
}

// tooBig closes the connection with 1009 when the frame would take its
// message past MaxMessageBytes. It is checked on the header alone, before a
// byte of the payload is buffered.
func (c *conn) tooBig(h ws.Header) bool {
	if h.OpCode.IsControl() {
		return false
	}
	size := h.Length
	if h.OpCode == ws.OpContinuation && c.msg != nil {
		size += int64(len(c.msg.B))
	}
	if size <= int64(c.srv.cfg.MaxMessageBytes) {
		return false
	}
	c.endRead(causeTooBig)
	return true
}

func (c *conn) protocolError(err error) {
	c.srv.log.Debug("protocol error", "role", c.role, c.addrs(), "err", err)
	c.endRead(causeProtocol)
}

var (
	errContinuation = errors.New("continuation frame with no message started")
	errInterleaved  = errors.New("new data frame inside a fragmented message")
)

// frame handles one complete, unmasked frame.
func (c *conn) frame(h ws.Header, payload []byte) {
	switch {
	case h.OpCode.IsControl():
		c.control(h.OpCode, payload)
	case h.OpCode == ws.OpContinuation:
		if c.msg == nil {
			c.protocolError(errContinuation)
			return
		}
		c.msg.B = append(c.msg.B, payload...)
		c.srv.counters.StagedBytes.Add(int64(len(payload)))
		if h.Fin {
			c.deliver(c.msg.B)
			c.srv.counters.StagedBytes.Add(-int64(len(c.msg.B)))
			putBuf(&msgPool, c.msg)
			c.msg = nil
		}
	default: // text or binary
		if c.msg != nil {
			c.protocolError(errInterleaved)
			return
		}
		if h.Fin {
			c.deliver(payload)
			return
		}
		c.msg = msgPool.Get()
		c.msg.B = append(c.msg.B, payload...)
		c.srv.counters.StagedBytes.Add(int64(len(payload)))
	}
}

func (c *conn) control(op ws.OpCode, payload []byte) {
	switch op {
	case ws.OpPing:
		if c.state.closing.Load() {
			return
		}
		b := framePool.Get()
		b.B = wsframe.AppendServerHeader(b.B, ws.OpPong, len(payload))
		b.B = append(b.B, payload...)
		c.pushControl(b, controlSlack, DropPongOverflow)
	case ws.OpPong:
		c.gotPong() // unsolicited pongs are allowed and count the same
	case ws.OpClose:
		code, err := wsframe.ParseCloseBody(payload)
		if err != nil {
			c.protocolError(err)
			return
		}
		c.peerClosed(code)
	}
}

// deliver routes one whole data message by the connection's role.
func (c *conn) deliver(msg []byte) {
	if c.state.closing.Load() {
		return
	}
	switch c.role {
	case rolePhone:
		c.phoneMessage(msg)
	case roleBinary:
		c.binaryMessage(msg)
	}
}
