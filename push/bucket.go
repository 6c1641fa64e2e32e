package push

import (
	"sync"
	"time"
)

// bucketSample is how many buckets an insert looks at to delete idle ones
// (and, when the table is full, to pick one to forget).
const bucketSample = 8

// buckets is the per-server-id token bucket: a server-id holds at most
// burst wakes, regains one every interval, and each admitted wake spends
// one. Like the upgrade limiter in loop, each bucket is kept as the instant
// it is full again (GCRA): a bucket whose instant has passed is the same as
// no bucket, so idle ones are deleted as inserts sample the table, and the
// table never holds more than max buckets (a full table forgets the sampled
// bucket closest to full). Wakes are rare, so one lock is enough.
type buckets struct {
	mu       sync.Mutex
	interval int64 // ns
	span     int64 // burst*interval
	max      int
	start    time.Time
	full     map[string]int64 // server-id → ns since start when its bucket is full again
}

func newBuckets(burst int, interval time.Duration, max int) *buckets {
	return &buckets{
		interval: int64(interval),
		span:     int64(burst) * int64(interval),
		max:      max,
		start:    time.Now(),
		full:     make(map[string]int64),
	}
}

// allow spends one of serverID's wakes if it has one.
func (b *buckets) allow(serverID string) bool {
	now := int64(time.Since(b.start))
	b.mu.Lock()
	defer b.mu.Unlock()
	if full, ok := b.full[serverID]; ok {
		if full-now > b.span-b.interval {
			return false
		}
		b.full[serverID] = max(full, now) + b.interval
		return true
	}
	b.sweep(now)
	b.full[serverID] = now + b.interval
	return true
}

func (b *buckets) sweep(now int64) {
	var victim string
	victimFull, found, seen := int64(0), false, 0
	for k, full := range b.full {
		if full <= now {
			delete(b.full, k)
		} else if !found || full < victimFull {
			victim, victimFull, found = k, full, true
		}
		if seen++; seen == bucketSample {
			break
		}
	}
	if len(b.full) >= b.max && found {
		delete(b.full, victim)
	}
}

// len is how many buckets are held (for tests).
func (b *buckets) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.full)
}
