package loop

import (
	"sync"
	"sync/atomic"
	"time"
)

// wheel is the relay's one timer structure: a hashed timing wheel driven by
// a single goroutine. Each connection has at most one live entry, booked at
// the earliest of its deadlines (handshake, message, ping, pong, linger,
// takeover probe); when it fires, conn.onTimer acts on what is due and books
// the next. No connection owns a goroutine, a ticker or a runtime timer.
//
// Entries are never removed: a connection rebooks only when its new time is
// earlier than the booked one, and entries whose time no longer matches the
// connection's booking are skipped as stale when their slot fires.
type wheel struct {
	tick   time.Duration
	origin time.Time
	slots  [wheelSlots]wheelSlot
	now    atomic.Int64 // ticks processed so far
	stop   chan struct{}
	done   chan struct{}
}

// wheelSlots × tick is the horizon; later deadlines wrap around and are
// rebooked when their slot comes up early. With the default deadlines the
// tick is 100 ms and 4096 slots cover 409 s, so wraps are rare.
const wheelSlots = 4096

type wheelSlot struct {
	mu    sync.Mutex
	conns []*conn
}

func newWheel(tick time.Duration) *wheel {
	return &wheel{tick: tick, origin: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
}

// at converts a time to the wheel's clock: nanoseconds since origin, never 0
// (0 means "nothing booked").
func (w *wheel) at(t time.Time) int64 { return max(int64(t.Sub(w.origin)), 1) }

// book makes sure c is checked no later than at.
func (w *wheel) book(c *conn, at int64) {
	for {
		cur := c.timerAt.Load()
		if cur != 0 && cur <= at {
			return // an earlier check is booked; it will book this one
		}
		if c.timerAt.CompareAndSwap(cur, at) {
			break
		}
	}
	w.insert(c, at)
}

func (w *wheel) insert(c *conn, at int64) {
	t := at / int64(w.tick)
	if now := w.now.Load(); t <= now {
		t = now + 1 // never into a slot already processed
	}
	s := &w.slots[t%wheelSlots]
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
}

func (w *wheel) run() {
	defer close(w.done)
	tk := time.NewTicker(w.tick)
	defer tk.Stop()
	var batch []*conn
	for {
		select {
		case <-w.stop:
			return
		case now := <-tk.C:
			target := w.at(now) / int64(w.tick)
			for t := w.now.Load() + 1; t <= target; t++ {
				batch = w.fire(t, now, batch)
			}
		}
	}
}

// fire processes slot t. batch is scratch space reused across ticks.
// Anything booked up to one tick ahead counts as due, so deadlines fire at
// most a tick early and never a whole rotation late.
func (w *wheel) fire(t int64, now time.Time, batch []*conn) []*conn {
	s := &w.slots[t%wheelSlots]
	s.mu.Lock()
	batch, s.conns = s.conns, batch[:0]
	w.now.Store(t)
	s.mu.Unlock()
	horizon := w.at(now) + int64(w.tick)
	for i, c := range batch {
		batch[i] = nil
		at := c.timerAt.Load()
		switch {
		case at == 0:
			continue // nothing booked: fired through another entry
		case at > horizon:
			if (at/int64(w.tick))%wheelSlots == t%wheelSlots {
				w.insert(c, at) // wrapped around the horizon: not due yet
			}
			continue // otherwise stale: the live entry sits in at's slot
		}
		if c.timerAt.CompareAndSwap(at, 0) {
			c.onTimer(horizon)
		}
	}
	return batch[:0]
}

func (w *wheel) close() {
	close(w.stop)
	<-w.done
}

// wheelTick picks the wheel's resolution: a tenth of the shortest deadline,
// between 5 ms and 100 ms, so a deadline fires at most ~10% late.
func wheelTick(ds ...time.Duration) time.Duration {
	tick := 100 * time.Millisecond
	for _, d := range ds {
		if d > 0 && d/10 < tick {
			tick = d / 10
		}
	}
	return max(tick, 5*time.Millisecond)
}
