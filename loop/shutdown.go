package loop

import (
	"context"
	"time"
)

// Shutdown drains the relay: upgrades from now on are refused with 503,
// every binary and phone is sent 1001 `shutting down`, and Shutdown waits
// for their close handshakes until ctx ends or DrainTimeout passes. Then the
// listener and whatever is still open are closed. The close frames are
// written from this goroutine straight to each idle socket; only a
// connection whose socket is full, or whose writer is already busy, gets
// its close frame through its outbox, so tens of thousands of closes do not
// start a goroutine each.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.draining.CompareAndSwap(false, true) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DrainTimeout)
	defer cancel()
	var bins, phones []*conn
	if !s.handedOff.Load() { // else they are a live upgrade's successor's
		bins, phones = s.reg.Each(nil, nil)
	}
	// Binaries whose claim waits on a takeover probe are in no slot: take
	// them off the queues, so no probe outcome answers them too, and give
	// them 101 then 1001 now rather than leaving them to the drain deadline.
	// Upgrades that register after this snapshot close themselves
	// (handshake.go: upgrade and register look at draining once more).
	var waiting []*conn
	if !s.handedOff.Load() {
		waiting = s.reg.TakeWaiting(nil)
	}
	s.log.Info("draining", "binaries", len(bins), "phones", len(phones), "claims_waiting", len(waiting))
	for _, c := range phones {
		c.close(causeShutdown)
	}
	for _, c := range bins {
		c.close(causeShutdown)
	}
	for _, c := range waiting {
		c.claimShutdown()
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.live.Load() > 0 {
		select {
		case <-ctx.Done():
			s.log.Warn("drain deadline passed", "still_open", s.live.Load())
			return s.stop()
		case <-tick.C:
		}
	}
	return s.stop()
}

// readWorkersPatience bounds how long stop waits for read tasks already
// queued. They never block, so they finish in microseconds; the bound only
// keeps a bug from turning into a shutdown that never ends.
const readWorkersPatience = 5 * time.Second

// stop closes the listener and every connection still open.
func (s *Server) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.evl.Shutdown(ctx)
	s.ready.closeAll()
	s.wheel.Close()
	if !s.tasks.Stop(readWorkersPatience) {
		s.log.Error("read workers still busy after shutdown", "after", readWorkersPatience)
	}
	s.ready.stop()
	return err
}
