package loop

import "time"

// The relay's two latency histograms, switchboard_outbox_wait_seconds and
// switchboard_upgrade_duration_seconds (metrics.go writes them).

// outboxWaitBounds: a frame waits in its outbox from its push to the start
// of the writev that carries it. On a healthy relay that is the writer
// goroutine's start or the previous flush, a few to tens of µs, so the
// buckets start at 10 µs and are fine below a millisecond; behind a slow
// reader a frame waits for the socket to drain, up to --write-timeout
// (10 s by default), where the buckets end.
var outboxWaitBounds = newHistBounds(
	10*time.Microsecond, 25*time.Microsecond, 50*time.Microsecond,
	100*time.Microsecond, 250*time.Microsecond, 500*time.Microsecond,
	time.Millisecond, 2500*time.Microsecond, 5*time.Millisecond,
	10*time.Millisecond, 25*time.Millisecond, 50*time.Millisecond,
	100*time.Millisecond, 250*time.Millisecond, 500*time.Millisecond,
	time.Second, 2500*time.Millisecond, 5*time.Second, 10*time.Second)

// upgradeBounds: from the first byte of a request head to the 101 or the
// refusal being written. A head that arrives in one segment is answered in
// tens of µs, so the buckets start at 25 µs; a head that trickles in is
// bounded by --handshake-timeout (5 s), and a duplicate claim's 101 waits
// for the takeover probe, up to --takeover-timeout (10 s) more, so they end
// at 20 s.
var upgradeBounds = newHistBounds(
	25*time.Microsecond, 50*time.Microsecond, 100*time.Microsecond,
	250*time.Microsecond, 500*time.Microsecond, time.Millisecond,
	2500*time.Microsecond, 5*time.Millisecond, 10*time.Millisecond,
	25*time.Millisecond, 50*time.Millisecond, 100*time.Millisecond,
	250*time.Millisecond, 500*time.Millisecond, time.Second,
	2500*time.Millisecond, 5*time.Second, 10*time.Second, 20*time.Second)

// clockOrigin makes monoNow a reading of the monotonic clock alone:
// time.Since on a time with a monotonic reading costs one vDSO call and no
// wall-clock read.
var clockOrigin = time.Now()

// monoNow is nanoseconds since clockOrigin, never 0 (0 means "not taken").
func monoNow() int64 { return int64(time.Since(clockOrigin)) + 1 }

// upgradeStamp travels with the 101 or refusal that ends an upgrade
// attempt, from the read task that queues it to the writer that writes it.
type upgradeStamp struct {
	began    int64 // monoNow at the head's first byte; 0: nothing to time
	endpoint Endpoint
}

// noteHeadStart records when the request head began, the first time the
// handshake sees any of it. The time lives in graceGen, which nothing
// reads before a binary's upgrade (deadlines.go): conn has no room for a
// field of its own (size_test.go).
func (c *conn) noteHeadStart() {
	if c.graceGen == 0 {
		c.graceGen = uint64(monoNow())
	}
}

// takeUpgradeStamp hands the head's start to the frame that answers it,
// once per connection, and only for the two upgrade endpoints.
func (c *conn) takeUpgradeStamp() upgradeStamp {
	began := int64(c.graceGen)
	c.graceGen = 0
	if c.role == roleNone {
		return upgradeStamp{}
	}
	return upgradeStamp{began: began, endpoint: c.endpoint()}
}

// observeFlush records, after a flush, how long each frame of the batch
// waited before the write began (start), and the upgrade its first frame
// answered, now written. Frames of a batch are tallied per bucket so
// writers touch the shared buckets about once per flush, not per frame.
func (c *Counters) observeFlush(q *frameQueue, start int64) {
	h, sum := &c.outboxWait, int64(0)
	run, runBucket := uint64(0), -1
	for _, at := range q.queuedAt {
		w := max(start-at, 0)
		sum += w
		if i := outboxWaitBounds.bucket(w); i != runBucket {
			if run > 0 {
				h.addBucket(runBucket, run)
			}
			run, runBucket = 0, i
		}
		run++
	}
	if run > 0 {
		h.addBucket(runBucket, run)
	}
	h.addSum(sum)
	if q.upgrade.began != 0 {
		c.upgradeTime[q.upgrade.endpoint].observe(upgradeBounds, monoNow()-q.upgrade.began)
	}
}
