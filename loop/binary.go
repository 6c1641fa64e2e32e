package loop

import (
	"switchboard/envelope"
	"switchboard/wsframe"
)

// binaryMessage routes one envelope from a binary to the phone it names, if
// that phone belongs to this binary's server-id. Anything else is dropped
// and counted; the binary's connection stays up.
func (c *conn) binaryMessage(msg []byte) {
	if c.env == nil {
		c.env = new(envelope.FromBinary) // once per binary: Scan's result points into it
	}
	env := c.env
	if err := env.Scan(msg); err != nil {
		c.srv.counters.Drops[DropBadEnvelope].Add(1)
		c.srv.log.Debug("envelope dropped", c.addrs(), "err", err)
		return
	}
	if len(env.ConnID) == 0 { // Scan guarantees a push_wake object then
		if w := c.srv.cfg.Push; w != nil {
			w.Wake(c.serverID, env.PushWake) // admits or drops; never blocks
			return
		}
		c.srv.counters.Drops[DropPushWakeOff].Add(1)
		c.srv.log.Debug("push wake dropped: push is off (no FCM credentials)")
		return
	}
	p, ok := c.srv.reg.Phone(c.serverID, c, env.ConnID)
	if !ok {
		c.srv.counters.Drops[DropUnknownConnID].Add(1)
		return
	}
	if env.Frame != nil && !c.sendToPhone(p, env.Frame) {
		return
	}
	if env.CloseCode != 0 {
		code := env.CloseCode
		if !wsframe.SendableCloseCode(code) {
			code = 0 // no endpoint may put this code on the wire: close with no code
		}
		p.closeCode(causeBinaryAsked, code)
	}
}

// releaseSlot gives up the binary's server-id, once. A rival waiting on a
// takeover probe gets the slot at once; otherwise the slot is held for the
// grace window, phones and all, for this binary to reclaim. A binary whose
// own claim is still queued on a probe leaves the queue instead.
func (c *conn) releaseSlot() {
	if c.detached || c.serverID == "" || c.role != roleBinary {
		return
	}
	c.detached = true
	hook(hookLeaving, c)
	if c.claimQueued && c.srv.reg.Withdraw(c.serverID, c) {
		c.withdrawClaim()
		return
	}
	// Not queued (any more): this binary holds the slot, even if it won it
	// while already leaving, or it was refused and holds nothing.
	// No scratch arrays: the winner escapes, and escape analysis would take
	// them along to the heap on every departure. Empty moves allocate only
	// when a hand-over fills them.
	m, gen, held := c.srv.reg.Release(c.serverID, c, true, moves{})
	log := c.srv.log
	log.Info("binary left", "server_id", c.serverID, c.addrs())
	switch {
	case m.Winner != nil:
		c.probeDue.Store(0)
		c.srv.handedOver(m.Winner, m.Evicted, m.Refused)
	case held:
		c.graceGen = gen
		c.setDeadline(&c.graceDue, c.wheelNow()+int64(c.srv.cfg.GracePeriod))
		log.Info("grace started", "server_id", c.serverID, c.addrs(), "grace_period", c.srv.cfg.GracePeriod)
	}
}

// graceExpired runs on the wheel when a departed binary's grace window
// ends; a window that was reclaimed meanwhile is not touched.
func (c *conn) graceExpired() {
	var phonesRoom connScratch
	phones, ok := c.srv.reg.Expire(c.serverID, c, c.graceGen, phonesRoom[:0])
	if !ok {
		return
	}
	c.srv.counters.GraceExpiries.Add(1)
	for _, p := range phones {
		p.close(causeGraceExpired)
	}
	c.srv.log.Info("grace expired", "server_id", c.serverID, c.addrs(), "grace_period", c.srv.cfg.GracePeriod,
		"phones_dropped", len(phones))
}
