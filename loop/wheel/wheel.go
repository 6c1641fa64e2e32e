// Package wheel is the relay's one timer structure: a hashed timing wheel
// driven by a single goroutine. Each entry has at most one live booking, at
// the earliest time it must be looked at; when it fires, the entry's
// OnTimer acts on whatever is due and books the next. No entry owns a
// goroutine, a ticker or a runtime timer.
//
// Entries are never removed: an entry rebooks only when its new time is
// earlier than the booked one, and entries whose time no longer matches the
// entry's booking are skipped as stale when their slot fires.
package wheel

import (
	"sync"
	"sync/atomic"
	"time"
)

// Entry is what the wheel books: typically a pointer to a struct that
// keeps its own deadlines and an atomic.Int64 for the wheel.
type Entry interface {
	// TimerAt is the entry's booking: the wheel time (see At) it is booked
	// for, or 0 when nothing is. The wheel alone writes it, and always the
	// same variable must come back.
	TimerAt() *atomic.Int64
	// OnTimer runs on the wheel's goroutine once the booking is due, with
	// the booking cleared first so that it may Book again. now is at least
	// the booked time and at most a tick ahead of the clock: whatever is
	// due by now may be acted on.
	OnTimer(now int64)
}

// Wheel books entries of type E. Book and At are safe for concurrent use.
type Wheel[E Entry] struct {
	tick   time.Duration
	origin time.Time
	slots  [numSlots]slot[E]
	now    atomic.Int64 // ticks processed so far
	stop   chan struct{}
	done   chan struct{}
}

// numSlots × tick is the horizon; later deadlines wrap around and are
// rebooked when their slot comes up early. With the relay's default
// deadlines the tick is 100 ms and 4096 slots cover 409 s, so wraps are
// rare.
const numSlots = 4096

type slot[E Entry] struct {
	mu      sync.Mutex
	entries []E
}

// New makes a wheel of resolution tick; Run drives it.
func New[E Entry](tick time.Duration) *Wheel[E] {
	return &Wheel[E]{tick: tick, origin: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
}

// At converts a time to the wheel's clock: nanoseconds since origin, never 0
// (0 means "nothing booked").
func (w *Wheel[E]) At(t time.Time) int64 { return max(int64(t.Sub(w.origin)), 1) }

// Book makes sure e is checked no later than at.
func (w *Wheel[E]) Book(e E, at int64) {
	ta := e.TimerAt()
	for {
		cur := ta.Load()
		if cur != 0 && cur <= at {
			return // an earlier check is booked; it will book this one
		}
		if ta.CompareAndSwap(cur, at) {
			break
		}
	}
	w.insert(e, at)
}

func (w *Wheel[E]) insert(e E, at int64) {
	t := at / int64(w.tick)
	if now := w.now.Load(); t <= now {
		t = now + 1 // never into a slot already processed
	}
	s := &w.slots[t%numSlots]
	s.mu.Lock()
	s.entries = append(s.entries, e)
	s.mu.Unlock()
}

// Run fires due entries, one tick at a time, until Close.
func (w *Wheel[E]) Run() {
	defer close(w.done)
	tk := time.NewTicker(w.tick)
	defer tk.Stop()
	var batch []E
	for {
		select {
		case <-w.stop:
			return
		case now := <-tk.C:
			target := w.At(now) / int64(w.tick)
			for t := w.now.Load() + 1; t <= target; t++ {
				batch = w.fire(t, now, batch)
			}
		}
	}
}

// fire processes slot t. batch is scratch space reused across ticks.
// Anything booked up to one tick ahead counts as due, so deadlines fire at
// most a tick early and never a whole rotation late.
func (w *Wheel[E]) fire(t int64, now time.Time, batch []E) []E {
	s := &w.slots[t%numSlots]
	s.mu.Lock()
	batch, s.entries = s.entries, batch[:0]
	w.now.Store(t)
	s.mu.Unlock()
	horizon := w.At(now) + int64(w.tick)
	var none E
	for i, e := range batch {
		batch[i] = none
		ta := e.TimerAt()
		at := ta.Load()
		switch {
		case at == 0:
			continue // nothing booked: fired through another entry
		case at > horizon:
			if (at/int64(w.tick))%numSlots == t%numSlots {
				w.insert(e, at) // wrapped around the horizon: not due yet
			}
			continue // otherwise stale: the live entry sits in at's slot
		}
		if ta.CompareAndSwap(at, 0) {
			e.OnTimer(horizon)
		}
	}
	return batch[:0]
}

// Close stops Run and waits for it to return. Call it once, with Run
// started.
func (w *Wheel[E]) Close() {
	close(w.stop)
	<-w.done
}

// Tick picks the wheel's resolution: a tenth of the shortest deadline,
// between 5 ms and 100 ms, so a deadline fires at most ~10% late.
func Tick(ds ...time.Duration) time.Duration {
	tick := 100 * time.Millisecond
	for _, d := range ds {
		if d > 0 && d/10 < tick {
			tick = d / 10
		}
	}
	return max(tick, 5*time.Millisecond)
}
