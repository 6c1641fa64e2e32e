package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"switchboard/internal/wsclient"
)

// binaryConn is one echoing binary. Its reader turns every phone envelope
// straight back into a binary→relay envelope (the relay's
// {"conn_id":…,"frame":…} is also a valid one); its writer flushes
// everything queued in one write, so a binary fanning in 16 phones does not
// pay a syscall per message. A close frame from the relay is answered at
// once (answerClose), so a relay draining under swload is not left waiting
// out its --close-linger for each binary.
type binaryConn struct {
	e  *engine
	id string
	c  *wsclient.Client

	mu      sync.Mutex
	ready   sync.Cond // writer: something queued or done
	space   sync.Cond // reader: queue below its cap
	pending []byte
	spare   []byte
	done    bool
	final   bool // pending ends with the answer to the relay's close: write it, then close
	wg      sync.WaitGroup

	// closing is set by whichever close frame goes out first, the relay's
	// answered or swload's own at the end, so only one ever does.
	closing atomic.Bool
}

// binaryQueueCap bounds what a binary queues for writing before its reader
// waits: at most 16 phones × their windows, far less in practice.
const binaryQueueCap = 4 << 20

func (e *engine) connectBinaries(ctx context.Context) {
	e.binaries = make([]*binaryConn, e.sh.binaries)
	var wg sync.WaitGroup
	pace(ctx, e.sh.rate, e.sh.binaries, e.stopCh, func(i int) bool {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := e.serverID(i)
			c, err := wsclient.Dial(e.cfg.Addr, e.cfg.dialOptions(e.localAddr()), wsclient.Request{Path: "/v1/server", Header: e.headers(id, false, 1<<40+int64(i))})
			if err != nil {
				e.connFails.add("binary_"+dialKind(err), 1)
				return
			}
			b := &binaryConn{e: e, id: id, c: c}
			b.ready.L, b.space.L = &b.mu, &b.mu
			e.binaries[i] = b
			b.wg.Add(2)
			go b.readLoop()
			go b.writeLoop()
		}()
		return true
	})
	wg.Wait()
}

func (b *binaryConn) readLoop() {
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		b.done = true
		b.ready.Broadcast()
		b.space.Broadcast()
		b.mu.Unlock()
	}()
	e := b.e
	for {
		op, p, err := b.c.ReadFrame()
		if err != nil {
			switch {
			case isDrain(err, p):
				e.drainedBinaries.Add(1)
			case !e.stopping.Load():
				e.errs.add("binary_"+readKind(err, p), 1)
			}
			if errors.Is(err, wsclient.ErrClosed) {
				b.answerClose(p)
			}
			return
		}
		if op != 0x1 {
			e.errs.add("binary_unexpected_opcode", 1)
			continue
		}
		if isCloseNotice(p) {
			e.notices.Add(1)
			continue
		}
		b.mu.Lock()
		for len(b.pending) > binaryQueueCap && !b.done {
			b.space.Wait()
		}
		if !b.done {
			b.pending = wsclient.AppendMasked(b.pending, wsclient.OpText, p)
			b.ready.Signal()
		}
		b.mu.Unlock()
		e.echoed.Add(1)
	}
}

// answerClose queues the answer to the relay's close frame (its code
// echoed) in place of whatever the writer has not taken yet: nothing may
// follow a close frame, and the relay would discard it. The writer sends it
// after the write in hand, if any, and closes the socket. When swload's own
// close went out first, this close is its answer and needs none.
func (b *binaryConn) answerClose(payload []byte) {
	if b.closing.Swap(true) {
		return
	}
	b.mu.Lock()
	b.pending = append(b.pending[:0], closeEcho(payload)...)
	b.final = true
	b.ready.Signal()
	b.mu.Unlock()
}

func (b *binaryConn) writeLoop() {
	defer b.wg.Done()
	for {
		b.mu.Lock()
		for len(b.pending) == 0 && !b.done {
			b.ready.Wait()
		}
		if len(b.pending) == 0 || (b.done && b.e.stopping.Load() && !b.final) {
			b.mu.Unlock()
			return
		}
		out, final := b.pending, b.final
		b.pending, b.spare = b.spare[:0], nil
		b.space.Broadcast()
		b.mu.Unlock()
		_, err := b.c.Conn.Write(out)
		if final {
			// The close is answered; the relay closes its side on reading it.
			_ = b.c.Close()
			return
		}
		b.mu.Lock()
		b.spare = out[:0]
		if err != nil {
			if !b.done && !b.e.stopping.Load() {
				b.e.errs.add("binary_write_"+ioKind(err), 1)
			}
			b.done = true
			b.space.Broadcast()
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
	}
}

// isCloseNotice tells {"conn_id":"…","close_code":N} from a frame envelope.
func isCloseNotice(p []byte) bool {
	const head = `{"conn_id":"`
	if len(p) < len(head) || string(p[:len(head)]) != head {
		return false
	}
	for i := len(head); i < len(p); i++ {
		if p[i] == '"' {
			const cc = `,"close_code":`
			rest := p[i+1:]
			return len(rest) >= len(cc) && string(rest[:len(cc)]) == cc
		}
	}
	return false
}

// closeBinaries ends every binary with a close handshake, bounded by the
// drain time.
func (e *engine) closeBinaries() {
	var wg sync.WaitGroup
	for _, b := range e.binaries {
		if b == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = b.c.Conn.SetDeadline(time.Now().Add(e.cfg.Drain))
			if !b.closing.Swap(true) {
				_, _ = b.c.Conn.Write(closeFrame())
			}
			if !waitTimeout(&b.wg, e.cfg.Drain+time.Second) {
				_ = b.c.Close()
				b.wg.Wait()
			}
			_ = b.c.Close()
		}()
	}
	wg.Wait()
}

var closeFrameBytes = wsclient.AppendMasked(nil, wsclient.OpClose, []byte{0x03, 0xe8}) // 1000

func closeFrame() []byte { return closeFrameBytes }
