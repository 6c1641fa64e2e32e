package loop

import (
	"sync/atomic"

	"switchboard/registry"
)

// A binary claiming a server-id whose holder looks alive must not be turned
// away unless the holder is provably alive: the real daemon treats 4409 as
// fatal. So the holder is pinged and the newcomer's 101 is held (nothing
// blocks: the decision arrives later on another goroutine):
//   - the holder's pong  → the newcomer gets 101 then 4409 (probeAnswered);
//   - no pong in time    → takeover: the newcomer gets the slot, the holder
//     is closed 1011 `heartbeat timeout` and its phones 4404 (probeExpired);
//   - the holder leaves  → the newcomer gets the slot at once (releaseSlot);
//   - the newcomer leaves → it is taken out of the queue (withdrawClaim);
//   - shutdown           → 101 then 1001 (shutdown.go).
// Further newcomers during one probe wait on the same probe; on a takeover
// only the first one wins and the others get 4409, since the winner has
// just proved itself alive by connecting.
//
// The queue of newcomers lives on the registry's slot, under its shard
// lock (registry.ClaimOrWait), so each of those outcomes takes the queue in
// one step with the holder change it implies: a newcomer is answered exactly
// once, never queues behind a holder that has already released the slot,
// and is never handed the slot after it withdrew.

// moves is what the registry decided on a change of holder.
type moves = registry.Moves[*conn, *conn]

// startProbe pings holder for newcomer, which the registry has queued
// behind it, unless an earlier rival's probe is already running.
func (s *Server) startProbe(holder, newcomer *conn, first bool) {
	s.counters.TakeoverProbes.Add(1)
	hook(hookClaimQueued, newcomer)
	if first {
		// A holder already gone ignores this deadline (onTimer), but then
		// its close callback has yet to release the slot, and that release
		// hands the slot to the queue.
		holder.setDeadline(&holder.probeDue, holder.wheelNow()+int64(s.cfg.TakeoverTimeout))
		holder.sendProbePing() // outside the budget: a backlogged holder still gets it
		hook(hookProbeSent, holder)
	}
}

// probeAnswered runs on the holder's read task when it pongs: it is alive,
// so every waiting newcomer is refused.
func (s *Server) probeAnswered(holder *conn) {
	holder.probeDue.Store(0)
	var waitingRoom connScratch
	for _, w := range s.reg.Keep(holder.serverID, holder, waitingRoom[:0]) {
		w.refuseClaim()
	}
}

// probeExpired runs on the wheel: the holder did not answer in time. When
// nobody waits any more (they withdrew) or the slot already moved (the
// holder left meanwhile and its release answered them), there is nothing to do.
func (s *Server) probeExpired(holder *conn) {
	hook(hookProbeExpired, holder)
	m, ok := s.reg.Takeover(holder.serverID, holder, moves{}) // allocates only on a takeover: see releaseSlot
	if !ok {
		return
	}
	s.handedOver(m.Winner, m.Evicted, m.Refused)
	holder.close(causeTakenOver)
}

// handedOver carries out a change of holder decided by the registry: the
// old holder's phones are closed 4404, the winner w's 101 goes and its
// timers start, the other rivals are refused.
func (s *Server) handedOver(w *conn, evicted, refused []*conn) {
	s.counters.Takeovers.Add(1)
	closeReclaimed(evicted)
	s.log.Info("binary took over server-id", "server_id", w.serverID, w.addrs())
	w.countUpgrade(UpgradeAccept)
	w.out.release()
	w.startHeartbeat()
	w.startLifetime()
	for _, r := range refused {
		r.refuseClaim()
	}
	if s.draining.Load() {
		// A holder closed by Shutdown handed over after its snapshot.
		w.close(causeShutdown)
	}
}

// refuseClaim answers a waiting newcomer: 101, then 4409. While draining it
// gets 1001 instead: its rival is being shut down too, and 4409 would make
// the daemon give up rather than redial another node.
func (c *conn) refuseClaim() {
	if c.srv.draining.Load() {
		c.claimShutdown()
		return
	}
	c.srv.counters.RegistryClaimed.Add(1)
	c.countUpgrade(UpgradeReject409)
	c.close(causeClaimed)
	c.out.release()
}

// claimShutdown answers a waiting newcomer during a drain: 101, then 1001.
func (c *conn) claimShutdown() {
	c.countUpgrade(UpgradeRejectCapacity)
	c.close(causeShutdown) // queued behind the held 101
	c.out.release()
}

// withdrawClaim runs when a newcomer still queued on a probe leaves (its
// read side ended or its socket closed): the registry no longer lists it, so
// nobody else will release its outbox, where its close frame (if the socket
// is still there) waits behind the held 101.
func (c *conn) withdrawClaim() {
	c.out.release()
}

// Test hooks: tests (export_test.go) set testHook to stop a goroutine at one
// of these points and force an interleaving a real socket cannot. Unset in
// production: one atomic load on rare paths.
type hookPoint uint8

const (
	hookClaimQueued  hookPoint = iota // register: the claim is queued, the probe not yet started
	hookProbeExpired                  // wheel: a probe expired, the takeover not yet tried
	hookLeaving                       // releaseSlot: a binary is leaving, the registry not yet told
	hookAdmitted                      // upgrade: past the draining check, not yet registered
	hookProbeSent                     // startProbe: the probe's ping is queued to the holder
	hookBeforeArm                     // pausedStep: a paused socket is about to wait for input
)

var testHook atomic.Pointer[func(hookPoint, *conn)]

func hook(p hookPoint, c *conn) {
	if f := testHook.Load(); f != nil {
		(*f)(p, c)
	}
}
