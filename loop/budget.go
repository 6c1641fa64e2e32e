package loop

import (
	"sync"
	"sync/atomic"
	"time"
)

// memoryBudget bounds the bytes the relay holds in connection buffers, all
// connections together: input netpoll has read and the read side has not
// taken (UnreadBytes), staged and reassembled input (StagedBytes), and every
// outbox (OutboxBytesQueued). Each connection's own bounds already cap what
// one peer can make the relay hold; the budget caps what many can,
// in the spirit of Envoy's overload manager:
//   - at budgetHighPercent of MemoryBudgetBytes, upgrades are refused 503
//     (RejectOverloaded) and connections reading large amounts pause
//     (pauseBudget) and stay paused until the total falls back;
//   - at MemoryBudgetBytes the largest holder is closed 1013 (CloseMemoryBudget),
//     its outbox discarded.
//
// Zero MemoryBudgetBytes turns it off.
type memoryBudget struct {
	limit, high int64
	counters    *Counters

	mu         sync.Mutex
	holders    map[*conn]struct{} // connections that may hold a lot: paused ones and outboxes past heavyOutboxBytes
	lastShed   atomic.Int64       // unix nanoseconds of the last look at the limit
	rechecking atomic.Bool        // a later look is booked (recheck)
	shedEvery  time.Duration
}

// budgetHighPercent is where refusing and pausing start: far enough below
// the limit that pausing readers usually keeps the relay from ever
// reaching it.
const budgetHighPercent = 80

// heavyOutboxBytes is the outbox size from which a connection counts as a
// possible largest holder. Below it a connection is not worth closing to
// free memory: a phone's default budget is 4 MiB.
const heavyOutboxBytes = 1 << 20

// shedInterval is the least time between two closes for the budget: the
// memory of a closed connection takes a moment to come back (its close
// callback frees its input), and closing a second one meanwhile would close
// more peers than the budget needs.
const shedInterval = 20 * time.Millisecond

func newMemoryBudget(limit int64, c *Counters) *memoryBudget {
	return &memoryBudget{
		limit: limit, high: limit / 100 * budgetHighPercent, counters: c,
		holders: make(map[*conn]struct{}), shedEvery: shedInterval,
	}
}

// held is the relay's buffered bytes right now.
func (b *memoryBudget) held() int64 {
	return b.counters.UnreadBytes.Load() + b.counters.StagedBytes.Load() + b.counters.OutboxBytesQueued.Load()
}

// overHigh reports whether the relay is past the budget's high mark.
func (b *memoryBudget) overHigh() bool { return b.limit > 0 && b.held() >= b.high }

// watch makes c a candidate for shedding.
func (b *memoryBudget) watch(c *conn) {
	if b.limit <= 0 {
		return
	}
	b.mu.Lock()
	b.holders[c] = struct{}{}
	if c.gone.Load() {
		// Its close callback ran between the caller's decision and here,
		// and its forget found nothing to remove.
		delete(b.holders, c)
	}
	b.mu.Unlock()
}

// forget removes c from the candidates.
func (b *memoryBudget) forget(c *conn) {
	if b.limit <= 0 {
		return
	}
	b.mu.Lock()
	delete(b.holders, c)
	b.mu.Unlock()
}

// enforce closes the largest holder when the relay is at its limit. Any
// goroutine may call it; it costs two atomic loads below the limit. While
// the relay stays at its limit it looks again every shedEvery, pushes or
// not, so a limit reached by input (no push follows) is acted on too.
func (b *memoryBudget) enforce() {
	if b.limit <= 0 || b.held() < b.limit {
		return
	}
	now := time.Now().UnixNano()
	last := b.lastShed.Load()
	if now-last < int64(b.shedEvery) || !b.lastShed.CompareAndSwap(last, now) {
		b.recheck()
		return
	}
	var victim *conn
	var most int64
	b.mu.Lock()
	for c := range b.holders {
		if c.state.closing.Load() || c.gone.Load() {
			delete(b.holders, c)
			continue
		}
		if n := c.bytesHeld(); n > most {
			victim, most = c, n
		}
	}
	b.mu.Unlock()
	b.recheck()
	if victim == nil {
		return
	}
	victim.srv.log.Warn("closing the largest buffer holder: memory budget reached",
		"role", victim.role, victim.addrs(), "held_bytes", most, "budget_bytes", b.limit)
	victim.close(causeMemoryBudget)
	// A writer waiting on a full socket still holds the batch it took;
	// it gives up now, so that memory comes back too (the close frame
	// cannot get past that batch anyway).
	victim.out.abortWait()
}

// recheck books one more look at the limit after shedEvery, unless one is
// booked already.
func (b *memoryBudget) recheck() {
	if b.rechecking.CompareAndSwap(false, true) {
		time.AfterFunc(b.shedEvery, func() {
			b.rechecking.Store(false)
			b.enforce()
		})
	}
}

// bytesHeld is what c holds in the relay's buffers: its input and its
// outbox. Any goroutine may call it.
func (c *conn) bytesHeld() int64 {
	c.out.mu.Lock()
	out := int64(c.out.charged)
	c.out.mu.Unlock()
	return out + int64(c.inputHeld.Load())
}
