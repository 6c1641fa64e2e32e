package loop

import (
	"switchboard/envelope"
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
		c.srv.log.Debug("envelope dropped", "remote", c.nc.RemoteAddr(), "err", err)
		return
	}
	if len(env.ConnID) == 0 {
		c.srv.counters.Drops[DropPushWakeOff].Add(1)
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
		if !sendableCode(code) {
			code = 0 // no endpoint may put this code on the wire: close with no code
		}
		p.closeWithNotice(CloseBinaryAsked, code, "", false, true)
	}
}

// releaseSlot gives up the binary's server-id, once, and closes the phones
// that were attached to it: with no grace window the slot goes with its
// binary.
func (c *conn) releaseSlot() {
	if c.detached || c.serverID == "" || c.role != roleBinary {
		return
	}
	c.detached = true
	var scratch [16]*conn
	for _, p := range c.srv.reg.Release(c.serverID, c, scratch[:0]) {
		p.closeWith(CloseSlotDropped, 1000, "", false)
	}
}
