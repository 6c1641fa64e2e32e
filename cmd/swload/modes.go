package main

import (
	"context"
	"time"
)

// What the phones do in each mode; engine.run picks one. Idle phones are
// held reading until the hold ends. Active phones keep messages in flight
// for the window: the closed loop is here, --rate's open loop in
// openloop.go. Churn phones connect, echo once and close, over and over.

// ---- idle ----

// holdIdle keeps an idle phone reading (answering pings) until the hold ends.
func (e *engine) holdIdle(p *phone) {
	for !e.stopping.Load() {
		_, b, err := p.c.ReadFrame()
		if err != nil {
			if e.stopping.Load() && isTimeout(err) {
				break
			}
			if isDrain(err, b) {
				e.drainedPhone(0)
			} else {
				e.errs.add("dropped_"+readKind(err, b), 1)
			}
			p.finish(false)
			return
		}
		e.errs.add("unexpected_frame", 1)
	}
	p.finish(true)
}

// ---- active ----

// runActive keeps inflight messages outstanding on one phone until the
// window ends, verifying every reply and timing it. With --rate it runs the
// phone open loop instead (openloop.go).
func (e *engine) runActive(p *phone) {
	if e.cfg.Rate > 0 {
		e.runOpenLoop(p)
		return
	}
	select {
	case <-e.startCh:
	case <-e.stopCh:
	}
	w := uint64(e.cfg.Inflight)
	sent := make([]time.Duration, w) // send time of seq, at seq % w
	next, want := uint64(1), uint64(1)
	send := func() bool {
		p.out = appendPayload(p.out[:0], p.id, next, e.cfg.Size)
		sent[next%w] = e.since()
		if err := p.c.WriteText(p.out); err != nil {
			if !e.stopping.Load() {
				e.errs.add("write_"+ioKind(err), 1)
			}
			return false
		}
		next++
		e.sends.Add(1)
		return true
	}
	for i := uint64(0); i < w && !e.stopping.Load(); i++ {
		if !send() {
			e.errs.add("lost", int64(next-want))
			p.finish(false)
			return
		}
	}
	for {
		if want == next && e.stopping.Load() {
			p.finish(true)
			return
		}
		op, b, err := p.c.ReadFrame()
		if err != nil {
			switch {
			case isDrain(err, b):
				e.drainedPhone(next - want)
			case e.stopping.Load() && isTimeout(err):
				e.errs.add("lost", int64(next-want))
			default:
				e.errs.add(readKind(err, b), 1)
				e.errs.add("lost", int64(next-want))
			}
			p.finish(false)
			return
		}
		now := e.since()
		if op != 0x1 {
			e.errs.add("unexpected_opcode", 1)
			continue
		}
		seq, ok := e.acceptReply(p, b, want, next)
		if !ok {
			continue
		}
		e.lat.record(p.id, now-sent[seq%w])
		want = seq + 1
		e.roundTrips.Add(1)
		if !e.stopping.Load() {
			e.windowTrips.Add(1)
			for next-want < w && !e.stopping.Load() {
				if !send() {
					e.errs.add("lost", int64(next-want))
					p.finish(false)
					return
				}
			}
		}
	}
}

// ---- churn ----

// runChurn starts churn cycles at the paced rate for the duration, each on
// one of the process's phone slots (so a server-id never has more phones
// than --phones-per-binary).
func (e *engine) runChurn(ctx context.Context) {
	slots := make(chan int, e.sh.phones)
	for i := range e.sh.phones {
		slots <- i
	}
	dctx, cancel := context.WithTimeout(ctx, e.cfg.Duration)
	defer cancel()
	per := e.cfg.PhonesPerBinary
	pace(dctx, e.sh.rate, -1, e.stopCh, func(i int) bool {
		var s int
		select {
		case s = <-slots:
		case <-dctx.Done():
			return false
		}
		id := int64(i)*int64(e.sh.procs) + int64(e.sh.index)
		e.phWG.Add(1)
		go func() {
			defer e.phWG.Done()
			defer func() { slots <- s }()
			e.churnCycle(e.serverID(s/per), id)
		}()
		return true
	})
}

// churnCycle is one churn phone: connect, one echo, close.
func (e *engine) churnCycle(serverID string, id int64) {
	p := e.connectPhone(serverID, id)
	if p == nil {
		return
	}
	p.finish(true)
	e.cycles.Add(1)
}
