package main

import (
	"sync/atomic"
	"time"

	"switchboard/internal/wsclient"
)

// Open loop (--mode active --rate R).
//
// The closed loop sends a phone's next message when a reply frees a slot,
// so a slow relay slows the generator down and the requests it would have
// sent meanwhile are never timed ("coordinated omission"). The open loop
// fixes every send time in advance instead: the run sends R messages per
// second in total, slot j at window start + j/R, and phone g of N (global
// index, over all worker processes) owns slots g, g+N, g+2N, … So each
// phone sends every N/R seconds, the phones are staggered evenly across that
// interval, and the aggregate is one message every 1/R seconds.
//
// Each phone has two goroutines: its reader (the phone goroutine, verifying
// and timing replies exactly as in the closed loop) and a pacer that sleeps
// on one reused timer until the phone's next slot and sends. The pacer never
// waits for replies. --inflight only caps how many of a phone's messages
// may be outstanding: a slot that finds the cap reached is skipped and
// counted as the error kind late_send, and the schedule goes on.
//
// Latency is measured from a message's scheduled time, not from when it
// was actually written: when the pacer runs late (the generator itself is
// short of CPU, or a write blocked) the delay is charged to the message, as
// it would be to a real client. How late the pacer ran is recorded
// separately (send_lag_us), and so is the latency from the actual write
// (latency_from_send_us, the "uncorrected" figure), so generator lateness
// can be told apart from relay latency. Go's timers wake with up to ~1 ms of
// slack (the runtime's idle poll sleeps in whole milliseconds), so at low
// latencies the send lag is a visible part of the scheduled-time latency.
//
// The end: at the window's close each pacer stops and sends one ping. The
// relay's pong tells the reader that no more sends are coming; it then
// waits for the replies still outstanding (bounded by --drain) and closes
// with a handshake.

// openLoop is one phone's open-loop state, shared by its pacer and reader.
type openLoop struct {
	e *engine
	p *phone
	c *wsclient.Client
	w uint64 // the --inflight cap

	// sched[seq % w] is the scheduled send time (since e.start) of seq. A
	// slot is rewritten only once seq-w has been answered (want > seq-w),
	// and the reader reads it before it advances want.
	sched []atomic.Int64
	sent  []atomic.Int64 // actual send time of seq, at seq % w (same rules)
	next  atomic.Uint64  // next sequence number to send; written by the pacer
	want  atomic.Uint64  // next reply expected; written by the reader

	done   atomic.Bool   // the pacer sends nothing more (set before its final ping)
	pinged atomic.Bool   // the final ping was written
	failed atomic.Bool   // the pacer hit a write error and closed the socket
	quit   chan struct{} // reader → pacer: stop now
	exited chan struct{} // closed when the pacer has returned

	out []byte // the pacer's payload buffer, reused
}

func newOpenLoop(e *engine, p *phone) *openLoop {
	o := &openLoop{
		e: e, p: p, c: p.c,
		w:      uint64(e.cfg.Inflight),
		sched:  make([]atomic.Int64, e.cfg.Inflight),
		sent:   make([]atomic.Int64, e.cfg.Inflight),
		quit:   make(chan struct{}),
		exited: make(chan struct{}),
		out:    make([]byte, 0, e.cfg.Size),
	}
	o.next.Store(1)
	o.want.Store(1)
	return o
}

// slotTime is when phone g of n sends its k-th message at rate messages per
// second in total, relative to the window's start: slot g + k·n of an
// evenly spaced aggregate schedule.
func slotTime(g int64, k uint64, n int, rate float64) time.Duration {
	return time.Duration((float64(g) + float64(k)*float64(n)) * (float64(time.Second) / rate))
}

// pingFrame is the pacer's final message: a masked ping, no payload.
var pingFrame = wsclient.AppendMasked(nil, wsclient.OpPing, nil)

// runOpenLoop is the phone goroutine in open-loop mode: it starts the
// pacer when the window opens, then reads, verifies and times replies.
func (e *engine) runOpenLoop(p *phone) {
	select {
	case <-e.startCh:
	case <-e.stopCh:
	}
	o := newOpenLoop(e, p)
	go o.pace()
	for {
		if o.done.Load() && o.want.Load() == o.next.Load() {
			<-o.exited // the final ping is written (or was never sent)
			p.finish(true)
			return
		}
		op, b, err := p.c.ReadFrame()
		if err != nil {
			o.fail(err, b)
			return
		}
		now := e.since()
		switch op {
		case 0x1:
		case 0xA: // the pong to the pacer's final ping
			continue
		default:
			e.errs.add("unexpected_opcode", 1)
			continue
		}
		want, next := o.want.Load(), o.next.Load()
		seq, ok := e.acceptReply(p, b, want, next)
		if !ok {
			continue
		}
		e.lat.record(p.id, now-time.Duration(o.sched[seq%o.w].Load()))
		e.latSend.record(p.id, now-time.Duration(o.sent[seq%o.w].Load()))
		o.want.Store(seq + 1)
		e.roundTrips.Add(1)
		if !e.stopping.Load() {
			e.windowTrips.Add(1)
		}
	}
}

// fail ends the phone after a failed read: the pacer is stopped first (and
// the socket closed under it, so a blocked write returns), then what was
// outstanding is counted lost.
func (o *openLoop) fail(err error, b []byte) {
	e, p := o.e, o.p
	close(o.quit)
	_ = p.c.Close()
	<-o.exited
	lost := int64(o.next.Load() - o.want.Load())
	switch {
	case isDrain(err, b):
		e.drainedPhone(uint64(lost))
		p.finish(false)
		return
	case o.failed.Load():
		// The pacer's write error is counted; this read error follows from it.
	case e.stopping.Load() && isTimeout(err):
		// The drain ran out: outstanding replies are lost (below); with
		// none outstanding the relay did not answer the final ping.
		if lost == 0 && o.pinged.Load() {
			e.errs.add("no_pong", 1)
		}
	default:
		e.errs.add(readKind(err, b), 1)
	}
	e.errs.add("lost", lost)
	p.finish(false)
}

// pace sends on the phone's schedule until the window ends.
func (o *openLoop) pace() {
	e := o.e
	defer close(o.exited)
	defer func() {
		o.done.Store(true)
		select {
		case <-o.quit:
			return
		default:
		}
		if o.failed.Load() {
			return
		}
		if _, err := o.c.Conn.Write(pingFrame); err == nil {
			o.pinged.Store(true)
		}
	}()
	if e.stopping.Load() {
		return // stopped before the window opened
	}
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	base, g, n, rate := e.winBase, o.p.id, e.cfg.Phones, e.cfg.Rate
	for k := uint64(0); ; k++ {
		sched := base + slotTime(g, k, n, rate)
		if wait := sched - e.since(); wait > 0 {
			t.Reset(wait)
			select {
			case <-t.C:
			case <-e.stopCh:
				return
			case <-o.quit:
				return
			}
		}
		if e.stopping.Load() {
			return
		}
		if !o.send(sched, e.since()) {
			return
		}
	}
}

// send is one scheduled slot: it sends the phone's next message, stamped
// with its scheduled time, unless the --inflight cap is reached (late_send,
// the slot is skipped). It reports false when the connection failed.
func (o *openLoop) send(sched, now time.Duration) bool {
	e := o.e
	seq := o.next.Load()
	if seq-o.want.Load() >= o.w {
		e.errs.add("late_send", 1)
		return true
	}
	// The timer never fires early, so now >= sched; lag is the pacer's own
	// lateness (timer slack, CPU shortage, a catch-up burst).
	e.lag.record(o.p.id, now-sched)
	o.out = appendPayload(o.out[:0], o.p.id, seq, e.cfg.Size)
	o.sched[seq%o.w].Store(int64(sched))
	o.sent[seq%o.w].Store(int64(now))
	o.next.Store(seq + 1) // before the write: the reply may beat our return
	if err := o.c.WriteText(o.out); err != nil {
		o.next.Store(seq) // never sent
		select {
		case <-o.quit:
		default:
			if !e.stopping.Load() {
				e.errs.add("write_"+ioKind(err), 1)
				o.failed.Store(true)
				_ = o.c.Close() // wake the reader
			}
		}
		return false
	}
	e.sends.Add(1)
	return true
}
