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

// probes maps a holder being probed to the newcomers waiting on it. Probes
// are rare (a daemon reconnecting before its old connection was noticed
// dead), so they live in one map on the Server rather than in a field every
// connection would carry.
type probes struct {
	mu      sync.Mutex
	waiting map[*conn][]*conn
}

// add queues newcomer on holder's probe and reports whether it is the first.
func (p *probes) add(holder, newcomer *conn) (first bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waiting == nil {
		p.waiting = make(map[*conn][]*conn)
	}
	first = len(p.waiting[holder]) == 0
	p.waiting[holder] = append(p.waiting[holder], newcomer)
	return first
}

// take removes and returns holder's waiting newcomers.
func (p *probes) take(holder *conn) []*conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.waiting[holder]
	delete(p.waiting, holder)
	return w
}

// startProbe queues newcomer on holder's probe, starting the probe if this
// is the first rival.
func (s *Server) startProbe(holder, newcomer *conn) {
	s.counters.TakeoverProbes.Add(1)
	if s.probes.add(holder, newcomer) {
		holder.setDeadline(&holder.probeDue, holder.wheelNow()+int64(s.cfg.TakeoverTimeout))
		holder.sendPing()
	}
}

// probeAnswered runs on the holder's read task when it pongs: it is alive,
// so every waiting newcomer is refused.
func (s *Server) probeAnswered(holder *conn) {
	holder.probeDue.Store(0)
	for _, w := range s.probes.take(holder) {
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
	waiting := s.probes.take(holder)
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
			s.log.Info("binary took over server-id", "server_id", w.serverID, "remote", w.src)
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
