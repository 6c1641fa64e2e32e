// Package ratelimit is a token bucket per key, kept in GCRA form, sharded,
// with bounded memory and no background work. The relay uses it per source
// IP on the upgrade paths and per server-id for push wakes.
package ratelimit

import (
	"hash/maphash"
	"sync"
	"time"
)

// shards is how many independently locked parts a limiter has; a check
// locks one for a map lookup and an update.
const shards = 64

// MinKeys is the smallest useful maxKeys: one bucket per shard.
const MinKeys = shards

// sample is how many entries of a shard an insert looks at: idle ones are
// deleted, and when the shard is full the least indebted of them makes
// room (see AllowAt).
const sample = 8

// MaxSpan bounds burst*interval, an empty bucket's time to refill; it
// keeps the arithmetic far from overflow and catches unit mistakes.
const MaxSpan = 7 * 24 * time.Hour

// Limiter is a token bucket per key: a key holds at most burst tokens, gains
// one every interval, and each attempt that is let through spends one.
//
// A bucket is kept in its "virtual scheduling" form (GCRA): one time, full,
// the instant at which the bucket will hold burst tokens again. With
// ahead = full - now, the bucket holds burst - ceil(ahead/interval) tokens,
// so an attempt is allowed when ahead <= (burst-1)*interval and then moves
// full forward by one interval (from now, if the bucket was already full).
// That is the token bucket with its lazy refill folded into one comparison:
// no float, no separate refill step, and a bucket whose full time has passed
// is exactly a bucket that does not exist. Such buckets are idle (nothing
// was let through for burst*interval) and are deleted as inserts sample
// their shard; nothing runs in the background.
//
// Memory is bounded by maxKeys, split evenly over the shards. When a
// shard is full, an insert evicts the sampled bucket closest to full (the
// one whose forgetting gives its source the fewest tokens back) instead of
// refusing the newcomer. Refusing would let anyone holding many addresses
// (an IPv6 /64 is 2^64 of them) lock every new source out of the relay for
// burst*interval; evicting keeps the relay reachable and at worst hands
// back part of a burst to a source that was already mostly refilled. The
// live-connection cap (503) still bounds what a flood can hold open.
type Limiter[K comparable] struct {
	burst    int64
	interval int64 // ns
	span     int64 // burst*interval: an empty bucket's time to full
	perShard int
	seed     maphash.Seed
	start    time.Time // times are ns since start (monotonic)
	shards   [shards]shard[K]
}

type shard[K comparable] struct {
	mu      sync.Mutex
	buckets map[K]int64   // key → the time its bucket is full again
	peak    int           // most buckets held since the map was last rebuilt
	_       [64 - 24]byte // keep neighbouring shards' locks off one cache line
}

// rebuildMin: a shard's map is rebuilt once it holds under 1/8 of its
// peak and the peak was at least this many buckets. Go maps never shrink,
// so after a flood recedes a sample would otherwise walk a mostly empty
// table on every insert, and the table's memory would stay taken.
const rebuildMin = 256

// New returns a limiter tracking at most maxKeys keys, or nil when burst is
// 0 or less: the limit is off.
func New[K comparable](burst int, interval time.Duration, maxKeys int) *Limiter[K] {
	if burst <= 0 {
		return nil
	}
	l := &Limiter[K]{
		burst:    int64(burst),
		interval: int64(interval),
		span:     int64(burst) * int64(interval),
		perShard: max(1, maxKeys/shards),
		seed:     maphash.MakeSeed(),
		start:    time.Now(),
	}
	for i := range l.shards {
		l.shards[i].buckets = make(map[K]int64)
	}
	return l
}

// Allow spends one of key's tokens if it has one.
func (l *Limiter[K]) Allow(key K) bool {
	return l.AllowAt(key, int64(time.Since(l.start)))
}

// AllowAt is Allow at time now, in ns since the limiter was made (tests
// drive the clock with it). It allocates nothing for a key it already knows.
func (l *Limiter[K]) AllowAt(key K, now int64) bool {
	sh := &l.shards[maphash.Comparable(l.seed, key)%shards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	full, known := sh.buckets[key]
	if known {
		if full-now > l.span-l.interval {
			return false // not one whole token
		}
		sh.buckets[key] = max(full, now) + l.interval
		return true
	}
	sh.makeRoom(now, l.perShard)
	sh.buckets[key] = now + l.interval
	sh.peak = max(sh.peak, len(sh.buckets))
	return true
}

// makeRoom deletes the idle buckets among a few sampled entries (Go's map
// iteration starts at a random place) and, if the shard is still full,
// the sampled bucket that is closest to full.
func (sh *shard[K]) makeRoom(now int64, limit int) {
	var victim K
	victimFull, found, seen := int64(0), false, 0
	for k, full := range sh.buckets {
		if full <= now {
			delete(sh.buckets, k) // full again: the same as no bucket
		} else if !found || full < victimFull {
			victim, victimFull, found = k, full, true
		}
		if seen++; seen == sample {
			break
		}
	}
	if len(sh.buckets) >= limit && found {
		delete(sh.buckets, victim)
	}
	if sh.peak >= rebuildMin && len(sh.buckets) < sh.peak/8 {
		sh.rebuild(now)
	}
}

// rebuild moves the live buckets into a map sized for them. Its cost is
// paid for by the 7/8 of the peak that inserts deleted before it.
func (sh *shard[K]) rebuild(now int64) {
	m := make(map[K]int64, len(sh.buckets))
	for k, full := range sh.buckets {
		if full > now {
			m[k] = full
		}
	}
	sh.buckets, sh.peak = m, len(m)
}

// Len is how many buckets the limiter holds.
func (l *Limiter[K]) Len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.buckets)
		sh.mu.Unlock()
	}
	return n
}
