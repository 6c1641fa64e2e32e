package loop

import (
	"sync"

	"github.com/valyala/bytebufferpool"
)

// An outbox holds a queue slice only while it has frames queued: the
// writer takes the whole slice and returns it here once written. An idle
// connection therefore keeps one nil pointer instead of two slice headers
// and their backing arrays.
var queuePool = sync.Pool{New: func() any { return new([]*bytebufferpool.ByteBuffer) }}

// maxPooledQueue is the largest queue capacity put back in the pool: a
// backlog of small frames can grow a queue to many thousands of entries,
// and the pool should not keep that size for ever.
const maxPooledQueue = 1024

// appendLocked queues b, taking a queue slice from the pool if the outbox
// has none. o.mu must be held.
func (o *outbox) appendLocked(b *bytebufferpool.ByteBuffer) {
	if o.queue == nil {
		o.queue = queuePool.Get().(*[]*bytebufferpool.ByteBuffer)
	}
	*o.queue = append(*o.queue, b)
}

// putQueue returns q, whose frames the caller has already released.
func putQueue(q *[]*bytebufferpool.ByteBuffer) {
	if cap(*q) > maxPooledQueue {
		return
	}
	clear(*q)
	*q = (*q)[:0]
	queuePool.Put(q)
}
