package loop

import "sync"

// A binary claiming a server-id whose holder looks alive must not be turned
// away unless the holder is provably alive: the real daemon treats 4409 as
// fatal. So the holder is pinged and the newcomer's 101 is held (nothing
// blocks: the decision arrives later on another goroutine):
//   - the holder's pong  → the newcomer gets 101 then 4409 (probeAnswered);
//   - no pong in time    → takeover: the newcomer gets the slot, the holder
//     is closed 1011 `heartbeat timeout` and its phones 4404 (probeExpired);
//   - the holder leaves  → the newcomer gets the slot at once (handOver).
// Further newcomers during one probe wait on the same probe; on a takeover
// only the first one wins and the others get 4409, since the winner has
// just proved itself alive by connecting.

// probeState is a holder's list of newcomers waiting on its probe.
type probeState struct {
	mu      sync.Mutex
	waiting []*conn
}

func (p *probeState) take() []*conn {
	p.mu.Lock()
	w := p.waiting
	p.waiting = nil
	p.mu.Unlock()
	return w
}

// startProbe queues newcomer on holder's probe, starting the probe if this
// is the first rival.
func (s *Server) startProbe(holder, newcomer *conn) {
	s.counters.TakeoverProbes.Add(1)
	holder.rivals.mu.Lock()
	first := len(holder.rivals.waiting) == 0
	holder.rivals.waiting = append(holder.rivals.waiting, newcomer)
	holder.rivals.mu.Unlock()
	if first {
		holder.setDeadline(&holder.probeDue, holder.wheelNow()+int64(s.cfg.TakeoverTimeout))
		holder.sendPing()
	}
}

// probeAnswered runs on the holder's read task when it pongs: it is alive,
// so every waiting newcomer is refused.
func (s *Server) probeAnswered(holder *conn) {
	holder.probeDue.Store(0)
	for _, w := range holder.rivals.take() {
		w.refuseClaim()
	}
}

// probeExpired runs on the wheel: the holder did not answer in time.
func (s *Server) probeExpired(holder *conn) {
	if !s.giveSlot(holder) {
		return
	}
	holder.closeWith(CloseTakenOver, 1011, "heartbeat timeout", false)
}

// handOver runs when a holder's connection ends while rivals wait: the first
// one takes the slot now. It reports whether the slot was handed over.
func (s *Server) handOver(holder *conn) bool {
	holder.probeDue.Store(0)
	return s.giveSlot(holder)
}

// giveSlot moves holder's server-id to the first live waiting rival,
// closing holder's phones 4404; later rivals are refused.
func (s *Server) giveSlot(holder *conn) bool {
	waiting := holder.rivals.take()
	var winner *conn
	var scratch [16]*conn
	for i, w := range waiting {
		if winner == nil && !w.gone.Load() {
			phones, ok := s.reg.Takeover(holder.serverID, holder, w, scratch[:0])
			if !ok {
				break // holder lost the slot some other way: refuse everyone
			}
			winner = w
			s.counters.Takeovers.Add(1)
			closeReclaimed(phones)
			s.log.Info("binary took over server-id", "server_id", w.serverID, "remote", w.nc.RemoteAddr())
			w.countUpgrade(UpgradeAccept)
			w.out.release()
			w.startHeartbeat()
			w.startLifetime()
			continue
		}
		waiting[i].refuseClaim()
	}
	return winner != nil
}

// refuseClaim answers a waiting newcomer: 101, then 4409.
func (c *conn) refuseClaim() {
	c.srv.counters.RegistryClaimed.Add(1)
	c.countUpgrade(UpgradeReject409)
	c.closeWith(CloseRegistry, 4409, "server-id already claimed", false)
	c.out.release()
}
