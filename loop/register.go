package loop

import (
	"errors"

	"switchboard/registry"
)

// register records the binary's claim or attaches the phone. The decision is
// made before the 101 leaves the outbox, so a phone dialled after a binary's
// upgrade completed always finds it. It returns false when the decision is
// pending: a rival binary holds the server-id and is being probed, and the
// probe's outcome releases this connection's 101 (see takeover.go).
func (c *conn) register(deviceName []byte) (decided bool) {
	s := c.srv
	if c.role == roleBinary {
		var evictedRoom connScratch
		// holder: the rival that keeps the slot on an error, else the
		// departed binary whose grace window this claim reclaimed (or nil).
		evicted, holder, first, err := s.reg.ClaimOrWait(c.serverID, c, evictedRoom[:0])
		if err != nil {
			c.claimQueued = true
			s.startProbe(holder, c, first)
			if s.draining.Load() && s.reg.Withdraw(c.serverID, c) {
				// Queued after Shutdown emptied the queues: nobody else
				// will answer this claim (same ordering as in upgrade).
				c.claimShutdown()
			}
			return false
		}
		closeReclaimed(evicted)
		c.countUpgrade(UpgradeAccept)
		if holder != nil {
			s.log.Info("grace reclaimed", "server_id", c.serverID, c.addrs(), "away", s.graceAway(holder))
		}
		s.log.Info("binary connected", "server_id", c.serverID, c.addrs(), "reclaimed_phones", len(evicted))
		return true
	}
	connID, b, err := s.reg.AddPhone(c.serverID, c)
	if err != nil {
		if errors.Is(err, registry.ErrNoServer) {
			s.counters.RegistryNoServer.Add(1)
			c.countUpgrade(UpgradeReject404)
		} else {
			s.counters.RegistryPhonesCap.Add(1)
			c.countUpgrade(UpgradeReject429)
		}
		c.refuse(err)
		return true
	}
	// The server-id read from the request head becomes garbage: the
	// phone's copy lives inside its conn_id (one string per idle phone).
	c.connID, c.serverID, c.binary = connID, registry.ServerIDOf(connID), b
	c.countUpgrade(UpgradeAccept)
	s.log.Debug("phone connected", "conn_id", connID, "device", string(deviceName), c.addrs())
	return true
}

// countUpgrade records what became of this connection's upgrade attempt.
func (c *conn) countUpgrade(o UpgradeOutcome) {
	c.srv.counters.Upgrades[c.endpoint()][o].Add(1)
}

// endpoint is the upgrade path this connection asked for (role set).
func (c *conn) endpoint() Endpoint {
	if c.role == rolePhone {
		return EndpointClient
	}
	return EndpointServer
}

// connScratch is stack room for the connections one registry call hands
// back (the phones of a server-id to close, rivals to refuse), so the
// common case allocates nothing; a longer list grows onto the heap.
type connScratch [16]*conn

// closeReclaimed ends the phones of a server-id that a new binary took.
func closeReclaimed(phones []*conn) {
	for _, p := range phones {
		p.close(causeReclaimed)
	}
}

// refuse closes an upgraded connection the registry turned away.
func (c *conn) refuse(err error) {
	// Input stays parsed (readDone is not set): the stream is in sync, data
	// frames are ignored because the connection is closing, and the peer's
	// answering close frame ends the connection at once instead of holding a
	// connection slot until CloseLinger.
	c.serverID = "" // holds nothing: the close callback must not release it
	switch {
	case errors.Is(err, registry.ErrClaimed):
		c.close(causeClaimed)
	case errors.Is(err, registry.ErrPhonesAtCap):
		c.close(causePhonesAtCap)
	default:
		c.close(causeNoServer)
	}
}
