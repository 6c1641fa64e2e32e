package main

import (
	"context"
	"errors"
	"time"

	"switchboard/internal/wsclient"
)

// phone is one phone connection and its reusable buffers.
type phone struct {
	e   *engine
	c   *wsclient.Client
	id  int64
	out []byte
	v   verifier
}

// connectRetries: a relay that registers a binary only after answering its
// 101 (the reference relay does) can refuse a phone dialled right after with
// 4404, and its clients retry; so does swload, a few times, counting it.
const connectRetries = 3

// connectPhone dials, upgrades and completes one warm-up round trip; nil
// means the attempt failed and was counted.
func (e *engine) connectPhone(serverID string, id int64) *phone {
	e.attempts.Add(1)
	for try := 0; ; try++ {
		p, fail := e.tryPhone(serverID, id)
		if p != nil || fail == "" {
			return p
		}
		if fail == "close_4404" && try < connectRetries && !e.stopping.Load() {
			e.retries.Add(1)
			time.Sleep(time.Duration(20<<try) * time.Millisecond)
			continue
		}
		if fail == "close_1001" {
			// 101, then 1001: the relay began draining as this phone
			// connected (drain.go).
			e.drainedPhone(0)
			return nil
		}
		e.connFails.add(fail, 1)
		return nil
	}
}

// tryPhone is one connect attempt. It returns the phone, or the connect
// failure's kind, or neither when the failure was an error (counted here).
func (e *engine) tryPhone(serverID string, id int64) (*phone, string) {
	t0 := time.Now()
	c, err := wsclient.Dial(e.cfg.Addr, e.cfg.dialOptions(e.localAddr()), wsclient.Request{Path: "/v1/client", Header: e.headers(serverID, true, id)})
	if err != nil {
		return nil, dialKind(err)
	}
	e.connLat.record(id, time.Since(t0))
	e.track(c)
	p := &phone{e: e, c: c, id: id, v: verifier{id: id, size: e.cfg.Size}}
	_ = c.Conn.SetDeadline(time.Now().Add(e.cfg.ReplyTimeout))
	p.out = appendPayload(p.out[:0], id, 0, e.cfg.Size)
	t1 := time.Now()
	if err := c.WriteText(p.out); err != nil {
		p.abort()
		return nil, "warmup_write_" + ioKind(err)
	}
	op, b, err := c.ReadFrame()
	if err != nil {
		p.abort()
		// A registry refusal (4404, 4429) arrives as a close frame here.
		if errors.Is(err, wsclient.ErrClosed) {
			return nil, readKind(err, b)
		}
		return nil, "warmup_" + ioKind(err)
	}
	rtt := time.Since(t1)
	if op != 0x1 {
		e.errs.add("unexpected_opcode", 1)
		p.abort()
		return nil, ""
	}
	seq, kind, re := p.v.check(b)
	if re {
		e.reencoded.Add(1)
	}
	if kind == "" && seq != 0 {
		kind = "out_of_order"
	}
	if kind != "" {
		e.errs.add(kind, 1)
		p.abort()
		return nil, ""
	}
	if e.cfg.Mode != modeActive {
		e.lat.record(id, rtt)
		e.roundTrips.Add(1)
	}
	e.connOK.Add(1)
	e.liveUp()
	return p, ""
}

// abort drops the connection without a close handshake.
func (p *phone) abort() {
	_ = p.c.Close()
	p.e.untrack(p.c)
}

// finish ends a live phone: with a close handshake (close frame, the
// relay's answer, then its FIN, so the relay side holds the TIME_WAIT) when
// the connection is in a clean state, else by dropping it.
func (p *phone) finish(clean bool) {
	e := p.e
	e.live.Add(-1)
	if !clean {
		p.abort()
		return
	}
	_ = p.c.Conn.SetDeadline(time.Now().Add(e.cfg.Drain))
	if _, err := p.c.Conn.Write(closeFrame()); err != nil {
		p.abort()
		return
	}
	for {
		_, _, err := p.c.ReadFrame()
		if err == nil {
			continue // a late frame or a pong; the window is over
		}
		if errors.Is(err, wsclient.ErrClosed) {
			// Wait for the relay's FIN so it closes first.
			var one [1]byte
			_, _ = p.c.Conn.Read(one[:])
		} else if isTimeout(err) {
			e.errs.add("close_no_reply", 1)
		}
		break
	}
	p.abort()
}

// connectPhones dials this process's phones at the paced rate, each on its
// own goroutine that then runs body. connWG tracks the connect phase.
func (e *engine) connectPhones(ctx context.Context, body func(p *phone)) {
	per := e.cfg.PhonesPerBinary
	pace(ctx, e.sh.rate, e.sh.phones, e.stopCh, func(i int) bool {
		e.connWG.Add(1)
		e.phWG.Add(1)
		go func() {
			defer e.phWG.Done()
			p := e.connectPhone(e.serverID(i/per), int64(e.sh.offset+i))
			if p == nil {
				e.connWG.Done()
				return
			}
			// Clear the warm-up deadline, then look at stopping: stop()
			// sets stopping before it sets deadlines, so either this phone
			// sees it here or stop's deadline lands after ours.
			_ = p.c.Conn.SetDeadline(time.Time{})
			e.connWG.Done()
			body(p)
		}()
		return true
	})
}

// acceptReply verifies one reply of phone p, which expects sequence number
// want and has sent up to next-1, and counts what is wrong with it. It
// returns the reply's sequence number and whether it is one to time.
// Replies skipped over are counted lost, and the phone goes on from seq.
func (e *engine) acceptReply(p *phone, b []byte, want, next uint64) (uint64, bool) {
	seq, kind, re := p.v.check(b)
	if re {
		e.reencoded.Add(1)
	}
	if kind != "" {
		e.errs.add(kind, 1)
		return 0, false
	}
	if seq < want || seq >= next {
		e.errs.add("unexpected_seq", 1)
		return 0, false
	}
	if seq != want {
		e.errs.add("out_of_order", 1)
		e.errs.add("lost", int64(seq-want))
	}
	return seq, true
}
