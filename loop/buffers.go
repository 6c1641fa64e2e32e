package loop

import "github.com/valyala/bytebufferpool"

// Pools are split by purpose: outbound frames are small
// and plentiful, staged input tails and reassembled messages are rarer and
// larger, and one purpose's sizes must not calibrate the other's.
var (
	framePool bytebufferpool.Pool // outbound frames, owned by an outbox until written
	stagePool bytebufferpool.Pool // incomplete request heads and frames, owned by the read side
	msgPool   bytebufferpool.Pool // fragments of a message being reassembled, owned by the read side
)

// maxPooledCap is the largest buffer returned to a pool. bytebufferpool keeps
// any size until it has calibrated, so without a cap one 256 KiB message would
// park 256 KiB in the pool for every connection that ever sent one.
const maxPooledCap = 64 << 10

func putBuf(p *bytebufferpool.Pool, b *bytebufferpool.ByteBuffer) {
	if cap(b.B) > maxPooledCap {
		return // let the GC have it
	}
	p.Put(b)
}
