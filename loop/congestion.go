package loop

import "sync"

// Backpressure across the relay, phone → binary. A binary reads the frames
// of up to 16 phones through one outbox; a phone that sends faster than its
// binary reads would fill that outbox and be closed 1011 `binary backlog
// full`. Instead, a phone whose frame leaves its binary's outbox more than
// half full stops reading (a read pause, pause.go, reason "binary_busy") and
// parks; the binary's writer wakes its parked phones once the outbox is down
// to a quarter. So a fast honest phone is slowed by TCP, not dropped, and
// 1011 stays for what no pause can stop (a phone whose single message does
// not fit).
//
// The other direction has no such link on purpose: a binary serves many
// phones, and one slow phone must never stall its binary (docs/protocol.md,
// "Binary to relay");
// a phone that cannot keep up is closed 1011 `phone backlog full`.

// congestedAbove and uncongestedBelow are the fractions of a binary's
// outbox budget where its phones park and wake: far enough apart that a
// phone parks for many frames' worth of draining, not one.
const (
	congestedAbove   = 2 // 1/2 of the budget
	uncongestedBelow = 4 // 1/4 of the budget
)

// A phone's park state (connState.park).
const (
	parkNone    uint32 = iota
	parkAsked          // its binary is congested: stop after this frame
	parkWaiting        // paused and parked: the binary's writer queues its next turn
)

// congestion maps a congested binary to the phones waiting for it to drain.
type congestion struct {
	mu      sync.Mutex
	waiting map[*conn][]*conn
}

// park registers phone p as waiting on binary b, which has just been found
// congested. It runs on p's read side.
func (s *Server) park(p, b *conn) {
	// Asked before listed: an unpark that takes the list at once then finds
	// the phone asked (and lets it go on) rather than not yet asked (and
	// leaves it to park with nobody left to wake it).
	p.state.park.Store(parkAsked)
	s.counters.Parks.Add(1)
	s.congestion.mu.Lock()
	if s.congestion.waiting == nil {
		s.congestion.waiting = make(map[*conn][]*conn)
	}
	s.congestion.waiting[b] = append(s.congestion.waiting[b], p)
	s.congestion.mu.Unlock()
	// Drained already (or gone) by the time the phone is listed: its
	// writer will not look again, so wake now.
	b.out.mu.Lock()
	drained := b.out.state == outboxClosed || b.out.charged <= b.out.limit/uncongestedBelow
	b.out.parked = !drained
	b.out.mu.Unlock()
	if drained {
		s.unpark(b)
	}
}

// unpark wakes every phone waiting on binary b. The binary's writer calls
// it once b's outbox is down to uncongestedBelow, and b's close callback
// calls it when b goes.
func (s *Server) unpark(b *conn) {
	s.congestion.mu.Lock()
	phones := s.congestion.waiting[b]
	delete(s.congestion.waiting, b)
	s.congestion.mu.Unlock()
	for _, p := range phones {
		if p.state.park.Swap(parkNone) == parkWaiting {
			p.queueStep()
		}
	}
}
