package main

import (
	"bytes"
	"time"

	"switchboard/internal/wsclient"
)

// The calm pair: one echoing binary and one phone that sends a small
// message on a fixed schedule beside the flood. Its round trips are the
// figure of merit: how much the flood delays a connection that is not
// flooding.

// connectCalm connects the calm binary (an echo) and phone, with one
// warm-up round trip; it returns the phone, or nil when that failed.
func (f *flood) connectCalm() *wsclient.Client {
	id := f.serverID("calm", 0)
	b, err := f.dial(id, false)
	if err != nil {
		f.connFails.add("calm_binary_"+dialKind(err), 1)
		return nil
	}
	bw := f.watch(b, func(p []byte) {
		if isCloseNotice(p) {
			return
		}
		if err := b.WriteText(p); err != nil && !f.closing.Load() {
			f.errs.add("calm_binary_write_"+ioKind(err), 1)
		}
	})
	go func() {
		<-bw.done
		if bw.kind != "" {
			f.errs.add("calm_binary_"+bw.kind, 1)
		}
	}()
	p, err := f.dialPhone(id)
	if err != nil {
		f.connFails.add("calm_phone_"+dialKind(err), 1)
		return nil
	}
	_ = p.Conn.SetDeadline(time.Now().Add(f.cfg.ReplyTimeout))
	msg := appendPayload(nil, calmID, 0, f.cfg.CalmSize)
	if err := p.WriteText(msg); err != nil {
		f.connFails.add("calm_warmup_write_"+ioKind(err), 1)
		return nil
	}
	op, r, err := p.ReadFrame()
	if err != nil {
		f.connFails.add("calm_warmup_"+readKind(err, r), 1)
		return nil
	}
	if op != 0x1 || !bytes.Equal(r, msg) {
		f.errs.add("calm_warmup_mismatch", 1)
		return nil
	}
	_ = p.Conn.SetDeadline(time.Time{})
	return p
}

// runCalm sends a calm message every interval during the window, each
// timed from its scheduled send time, and reads the echoes.
func (f *flood) runCalm(p *wsclient.Client) {
	v := verifier{id: calmID, size: f.cfg.CalmSize}
	w := f.watch(p, func(b []byte) {
		now := f.since()
		seq, kind, _ := v.check(b)
		if kind != "" {
			f.errs.add("calm_"+kind, 1)
			return
		}
		if seq == 0 || seq >= uint64(len(f.calmDue)) || f.calmDue[seq].Load() == 0 || f.calmGot[seq].Swap(true) {
			f.errs.add("calm_unexpected_seq", 1)
			return
		}
		rtt := now - time.Duration(f.calmDue[seq].Load())
		f.calmLat.record(0, rtt)
		f.calmReplies.Add(1)
		if rtt > calmLate {
			f.calmLate.Add(1)
		}
	})
	f.writers.Add(1)
	go func() {
		defer f.writers.Done()
		select {
		case <-f.startCh:
		case <-f.stopCh:
			return
		}
		base := f.winAt
		out := make([]byte, 0, f.cfg.CalmSize)
		for seq := 1; seq < len(f.calmDue) && !f.stopping.Load(); seq++ {
			due := base + time.Duration(seq)*f.cfg.CalmInterval
			if wait := due - f.since(); wait > 0 && !f.sleep(wait) {
				return
			}
			f.calmDue[seq].Store(int64(due))
			out = appendPayload(out[:0], calmID, uint64(seq), f.cfg.CalmSize)
			if err := p.WriteText(out); err != nil {
				if !f.closing.Load() {
					f.errs.add("calm_write_"+ioKind(err), 1)
				}
				return
			}
			f.calmSent.Add(1)
		}
	}()
	go func() {
		<-w.done
		if w.kind != "" && !(f.stopping.Load() && w.kind == "timeout") {
			f.errs.add("calm_phone_"+w.kind, 1)
		}
	}()
}
