package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"switchboard/internal/wsclient"
)

// engine drives one process's share of a run: its binaries, its phones, and
// the counters its progress lines and result are made of.
type engine struct {
	cfg   Config
	sh    share
	local []net.Addr
	start time.Time

	nextLocal atomic.Uint64

	// Counters; everything a progress line shows.
	phase        atomic.Value // string
	live         atomic.Int64 // phones connected (warm-up echoed) and not yet gone
	peakLive     atomic.Int64
	attempts     atomic.Int64 // phone connects attempted
	connOK       atomic.Int64 // phone connects that completed the warm-up round trip
	roundTrips   atomic.Int64 // verified round trips (warm-ups included in idle/churn)
	windowTrips  atomic.Int64 // active: round trips completed inside the window
	cycles       atomic.Int64 // churn: connect, echo, close cycles completed
	notices      atomic.Int64 // close notices the binaries received
	echoed       atomic.Int64 // envelopes the binaries echoed
	reencoded    atomic.Int64 // replies equal only after JSON decoding
	retries      atomic.Int64 // phone connects retried after a 4404
	sends        atomic.Int64 // active: phone messages sent (all inside the window)
	errs         kinds
	connFails    kinds
	lat, connLat *recorder
	lag          *recorder // open loop: how late each send left after its scheduled time
	latSend      *recorder // open loop: round trip from the actual send (uncorrected)

	// winBase is when the window opened (since start); written before
	// startCh closes, read by open-loop pacers after it has.
	winBase time.Duration

	stopping atomic.Bool
	stopCh   chan struct{}
	stopOnce sync.Once
	startCh  chan struct{} // active: closed when the window opens

	connsMu sync.Mutex
	conns   map[*wsclient.Client]struct{} // every open phone, for deadlines and abort

	binaries []*binaryConn
	phWG     sync.WaitGroup // phone goroutines
	connWG   sync.WaitGroup // idle/active: phones still connecting
}

func newEngine(cfg Config, sh share) *engine {
	shards := 4 * runtime.GOMAXPROCS(0)
	e := &engine{
		cfg: cfg, sh: sh,
		local:   sourceAddrs(cfg.Addr, cfg.SourceIPs),
		lat:     newRecorder(shards),
		connLat: newRecorder(shards),
		lag:     newRecorder(shards),
		latSend: newRecorder(shards),
		stopCh:  make(chan struct{}),
		startCh: make(chan struct{}),
		conns:   make(map[*wsclient.Client]struct{}),
	}
	e.nextLocal.Store(uint64(sh.index))
	e.phase.Store("start")
	return e
}

// kinds counts events by kind; kinds are rare (errors), so a mutex is fine.
type kinds struct {
	mu    sync.Mutex
	m     map[string]int64
	total atomic.Int64
}

func (k *kinds) add(kind string, n int64) {
	if n <= 0 {
		return
	}
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[string]int64)
	}
	k.m[kind] += n
	k.mu.Unlock()
	k.total.Add(n)
}

func (k *kinds) snapshot() map[string]int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make(map[string]int64, len(k.m))
	for kk, v := range k.m {
		out[kk] = v
	}
	return out
}

func (e *engine) since() time.Duration { return time.Since(e.start) }

func (e *engine) track(c *wsclient.Client) {
	e.connsMu.Lock()
	e.conns[c] = struct{}{}
	e.connsMu.Unlock()
}

func (e *engine) untrack(c *wsclient.Client) {
	e.connsMu.Lock()
	delete(e.conns, c)
	e.connsMu.Unlock()
}

// setDeadlines sets the deadline of every open phone (binaries keep
// reading until closeBinaries: close notices still arrive).
func (e *engine) setDeadlines(t time.Time) {
	e.connsMu.Lock()
	for c := range e.conns {
		_ = c.Conn.SetDeadline(t)
	}
	e.connsMu.Unlock()
}

// stop ends the window: nothing new is sent or dialled, and blocked reads
// are given until t to finish.
func (e *engine) stop(t time.Time) {
	e.stopOnce.Do(func() {
		e.stopping.Store(true)
		close(e.stopCh)
	})
	e.setDeadlines(t)
}

func (e *engine) liveUp() {
	n := e.live.Add(1)
	for {
		p := e.peakLive.Load()
		if n <= p || e.peakLive.CompareAndSwap(p, n) {
			return
		}
	}
}

func (e *engine) localAddr() net.Addr {
	if len(e.local) == 0 {
		return nil
	}
	return e.local[(e.nextLocal.Add(1)-1)%uint64(len(e.local))]
}

func (e *engine) serverID(b int) string {
	return fmt.Sprintf("swload-%s-w%d-b%d", e.cfg.RunID, e.sh.index, b)
}

func (e *engine) headers(serverID string, phone bool, seq int64) http.Header {
	h := http.Header{"X-Pyrycode-Server": {serverID}, "User-Agent": {"swload/1"}}
	if phone {
		h["X-Pyrycode-Token"] = []string{"swload"}
	} else {
		h["X-Pyrycode-Version"] = []string{"2"}
	}
	if e.cfg.XFF {
		// 10.0.0.0/8 from a per-connection counter.
		v := uint64(seq)*uint64(e.sh.procs) + uint64(e.sh.index)
		h["X-Forwarded-For"] = []string{fmt.Sprintf("10.%d.%d.%d", byte(v>>16), byte(v>>8), byte(v))}
	}
	return h
}

// ---- classification of failures ----

// closeCode reads a close frame's code (1005 when it has none).
func closeCode(payload []byte) int {
	if len(payload) < 2 {
		return 1005
	}
	return int(binary.BigEndian.Uint16(payload))
}

// dialKind names a failed dial: its HTTP status or the socket error.
func dialKind(err error) string {
	var se *wsclient.StatusError
	if errors.As(err, &se) {
		return "http_" + strconv.Itoa(se.Code)
	}
	return "dial_" + ioKind(err)
}

// ioKind names a socket error without its addresses.
func ioKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken_pipe"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "no_source_port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too_many_files"
	case errors.Is(err, net.ErrClosed):
		return "closed"
	}
	return "other"
}

// readKind names a failed read: the close code the relay sent, or the
// socket error.
func readKind(err error, payload []byte) string {
	if errors.Is(err, wsclient.ErrClosed) {
		return "close_" + strconv.Itoa(closeCode(payload))
	}
	return ioKind(err)
}

func isTimeout(err error) bool { return ioKind(err) == "timeout" }

// ---- binaries ----

// binaryConn is one echoing binary. Its reader turns every phone envelope
// straight back into a binary→relay envelope (the relay's
// {"conn_id":…,"frame":…} is also a valid one); its writer flushes
// everything queued in one write, so a binary fanning in 16 phones does not
// pay a syscall per message.
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
	wg      sync.WaitGroup
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
			c, err := wsclient.Dial(e.cfg.Addr, wsclient.Options{Timeout: e.cfg.DialTimeout, Local: e.localAddr()}, wsclient.Request{Path: "/v1/server", Header: e.headers(id, false, 1<<40+int64(i))})
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
			if !e.stopping.Load() {
				e.errs.add("binary_"+readKind(err, p), 1)
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

func (b *binaryConn) writeLoop() {
	defer b.wg.Done()
	for {
		b.mu.Lock()
		for len(b.pending) == 0 && !b.done {
			b.ready.Wait()
		}
		if len(b.pending) == 0 || (b.done && b.e.stopping.Load()) {
			b.mu.Unlock()
			return
		}
		out := b.pending
		b.pending, b.spare = b.spare[:0], nil
		b.space.Broadcast()
		b.mu.Unlock()
		_, err := b.c.Conn.Write(out)
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
			_, _ = b.c.Conn.Write(closeFrame())
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

// ---- phones ----

// phone is one phone connection and its reusable buffers.
type phone struct {
	e   *engine
	c   *wsclient.Client
	id  int64
	out []byte
	v   verifier
}

// connectRetries: a relay that registers a binary only after answering its
// 101 (the reference relay does) can refuse a phone dialled right after with
// 4404, and its clients retry; so does swload, a few times, counting it.
const connectRetries = 3

// connectPhone dials, upgrades and completes one warm-up round trip; nil
// means the attempt failed and was counted.
func (e *engine) connectPhone(serverID string, id int64) *phone {
	e.attempts.Add(1)
	for try := 0; ; try++ {
		p, fail := e.tryPhone(serverID, id)
		if p != nil || fail == "" {
			return p
		}
		if fail == "close_4404" && try < connectRetries && !e.stopping.Load() {
			e.retries.Add(1)
			time.Sleep(time.Duration(20<<try) * time.Millisecond)
			continue
		}
		e.connFails.add(fail, 1)
		return nil
	}
}

// tryPhone is one connect attempt. It returns the phone, or the connect
// failure's kind, or neither when the failure was an error (counted here).
func (e *engine) tryPhone(serverID string, id int64) (*phone, string) {
	t0 := time.Now()
	c, err := wsclient.Dial(e.cfg.Addr, wsclient.Options{Timeout: e.cfg.DialTimeout, Local: e.localAddr()}, wsclient.Request{Path: "/v1/client", Header: e.headers(serverID, true, id)})
	if err != nil {
		return nil, dialKind(err)
	}
	e.connLat.record(id, time.Since(t0))
	e.track(c)
	p := &phone{e: e, c: c, id: id, v: verifier{id: id, size: e.cfg.Size}}
	_ = c.Conn.SetDeadline(time.Now().Add(e.cfg.ReplyTimeout))
	p.out = appendPayload(p.out[:0], id, 0, e.cfg.Size)
	t1 := time.Now()
	if err := c.WriteText(p.out); err != nil {
		p.abort()
		return nil, "warmup_write_" + ioKind(err)
	}
	op, b, err := c.ReadFrame()
	if err != nil {
		p.abort()
		// A registry refusal (4404, 4429) arrives as a close frame here.
		if errors.Is(err, wsclient.ErrClosed) {
			return nil, readKind(err, b)
		}
		return nil, "warmup_" + ioKind(err)
	}
	rtt := time.Since(t1)
	if op != 0x1 {
		e.errs.add("unexpected_opcode", 1)
		p.abort()
		return nil, ""
	}
	seq, kind, re := p.v.check(b)
	if re {
		e.reencoded.Add(1)
	}
	if kind == "" && seq != 0 {
		kind = "out_of_order"
	}
	if kind != "" {
		e.errs.add(kind, 1)
		p.abort()
		return nil, ""
	}
	if e.cfg.Mode != modeActive {
		e.lat.record(id, rtt)
		e.roundTrips.Add(1)
	}
	e.connOK.Add(1)
	e.liveUp()
	return p, ""
}

// abort drops the connection without a close handshake.
func (p *phone) abort() {
	_ = p.c.Close()
	p.e.untrack(p.c)
}

// finish ends a live phone: with a close handshake (close frame, the
// relay's answer, then its FIN, so the relay side holds the TIME_WAIT) when
// the connection is in a clean state, else by dropping it.
func (p *phone) finish(clean bool) {
	e := p.e
	e.live.Add(-1)
	if !clean {
		p.abort()
		return
	}
	_ = p.c.Conn.SetDeadline(time.Now().Add(e.cfg.Drain))
	if _, err := p.c.Conn.Write(closeFrame()); err != nil {
		p.abort()
		return
	}
	for {
		_, _, err := p.c.ReadFrame()
		if err == nil {
			continue // a late frame or a pong; the window is over
		}
		if errors.Is(err, wsclient.ErrClosed) {
			// Wait for the relay's FIN so it closes first.
			var one [1]byte
			_, _ = p.c.Conn.Read(one[:])
		} else if isTimeout(err) {
			e.errs.add("close_no_reply", 1)
		}
		break
	}
	p.abort()
}

// connectPhones dials this process's phones at the paced rate, each on its
// own goroutine that then runs body. connWG tracks the connect phase.
func (e *engine) connectPhones(ctx context.Context, body func(p *phone)) {
	per := e.cfg.PhonesPerBinary
	pace(ctx, e.sh.rate, e.sh.phones, e.stopCh, func(i int) bool {
		e.connWG.Add(1)
		e.phWG.Add(1)
		go func() {
			defer e.phWG.Done()
			p := e.connectPhone(e.serverID(i/per), int64(e.sh.offset+i))
			if p == nil {
				e.connWG.Done()
				return
			}
			// Clear the warm-up deadline, then look at stopping: stop()
			// sets stopping before it sets deadlines, so either this phone
			// sees it here or stop's deadline lands after ours.
			_ = p.c.Conn.SetDeadline(time.Time{})
			e.connWG.Done()
			body(p)
		}()
		return true
	})
}

// holdIdle keeps an idle phone reading (answering pings) until the hold ends.
func (e *engine) holdIdle(p *phone) {
	for !e.stopping.Load() {
		_, b, err := p.c.ReadFrame()
		if err != nil {
			if e.stopping.Load() && isTimeout(err) {
				break
			}
			e.errs.add("dropped_"+readKind(err, b), 1)
			p.finish(false)
			return
		}
		e.errs.add("unexpected_frame", 1)
	}
	p.finish(true)
}

// runActive keeps inflight messages outstanding on one phone until the
// window ends, verifying every reply and timing it. With --rate it runs the
// phone open loop instead (openloop.go).
func (e *engine) runActive(p *phone) {
	if e.cfg.Rate > 0 {
		e.runOpenLoop(p)
		return
	}
	select {
	case <-e.startCh:
	case <-e.stopCh:
	}
	w := uint64(e.cfg.Inflight)
	sent := make([]time.Duration, w) // send time of seq, at seq % w
	next, want := uint64(1), uint64(1)
	send := func() bool {
		p.out = appendPayload(p.out[:0], p.id, next, e.cfg.Size)
		sent[next%w] = e.since()
		if err := p.c.WriteText(p.out); err != nil {
			if !e.stopping.Load() {
				e.errs.add("write_"+ioKind(err), 1)
			}
			return false
		}
		next++
		e.sends.Add(1)
		return true
	}
	for i := uint64(0); i < w && !e.stopping.Load(); i++ {
		if !send() {
			e.errs.add("lost", int64(next-want))
			p.finish(false)
			return
		}
	}
	for {
		if want == next && e.stopping.Load() {
			p.finish(true)
			return
		}
		op, b, err := p.c.ReadFrame()
		if err != nil {
			if !(e.stopping.Load() && isTimeout(err)) {
				e.errs.add(readKind(err, b), 1)
			}
			e.errs.add("lost", int64(next-want))
			p.finish(false)
			return
		}
		now := e.since()
		if op != 0x1 {
			e.errs.add("unexpected_opcode", 1)
			continue
		}
		seq, ok := e.acceptReply(p, b, want, next)
		if !ok {
			continue
		}
		e.lat.record(p.id, now-sent[seq%w])
		want = seq + 1
		e.roundTrips.Add(1)
		if !e.stopping.Load() {
			e.windowTrips.Add(1)
			for next-want < w && !e.stopping.Load() {
				if !send() {
					e.errs.add("lost", int64(next-want))
					p.finish(false)
					return
				}
			}
		}
	}
}

// churnCycle is one churn phone: connect, one echo, close.
func (e *engine) churnCycle(serverID string, id int64) {
	p := e.connectPhone(serverID, id)
	if p == nil {
		return
	}
	p.finish(true)
	e.cycles.Add(1)
}

// ---- pacing and waiting ----

// pace calls fn(i) for i = 0 … n-1 at rate calls per second (rate <= 0: as
// fast as fn returns) until ctx ends, stop closes or fn returns false. It
// returns how many calls were made.
func pace(ctx context.Context, rate float64, n int, stop <-chan struct{}, fn func(i int) bool) int {
	start := time.Now()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for i := 0; n < 0 || i < n; i++ {
		if rate > 0 {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			// Sleep only when ahead by more than a millisecond; behind,
			// catch up in a burst (timer granularity is ~1 ms).
			if wait := time.Until(due); wait > time.Millisecond {
				t.Reset(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					return i
				case <-stop:
					return i
				}
			}
		}
		select {
		case <-ctx.Done():
			return i
		case <-stop:
			return i
		default:
		}
		if !fn(i) {
			return i
		}
	}
	return n
}

// waitTimeout waits for wg up to d and reports whether it finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// ---- the run ----

// run drives the whole share and returns its result. ready is called once
// the connect phase is over (the workers' barrier); it returns when the
// window may open.
func (e *engine) run(ctx context.Context, ready func(context.Context)) *Result {
	e.start = time.Now()
	res := &Result{Mode: e.cfg.Mode, Phones: e.sh.phones, Binaries: e.sh.binaries,
		Inflight: e.cfg.Inflight, Size: e.cfg.Size, Procs: 1}

	e.phase.Store("connect")
	e.connectBinaries(ctx)
	connectStart := time.Now()
	switch e.cfg.Mode {
	case modeIdle:
		e.connectPhones(ctx, e.holdIdle)
	case modeActive:
		e.connectPhones(ctx, e.runActive)
	}
	// The connect phase is bounded by dial and reply timeouts per phone.
	waitTimeout(&e.connWG, e.cfg.DialTimeout+e.cfg.ReplyTimeout+time.Second)
	if e.cfg.Mode != modeChurn {
		res.ConnectPhaseS = time.Since(connectStart).Seconds()
	}

	if ctx.Err() == nil {
		e.phase.Store("ready")
		ready(ctx)
	}

	// With nothing connected there is nothing to hold or measure.
	nothing := e.cfg.Mode != modeChurn && e.connOK.Load() == 0
	winStart := time.Now()
	if ctx.Err() == nil && !nothing {
		switch e.cfg.Mode {
		case modeIdle:
			e.phase.Store("hold")
			sleepCtx(ctx, e.cfg.Hold)
			res.LiveAtEnd = e.live.Load()
		case modeActive:
			e.phase.Store("run")
			e.winBase = winStart.Sub(e.start)
			close(e.startCh)
			sleepCtx(ctx, e.cfg.Duration)
		case modeChurn:
			e.phase.Store("churn")
			e.runChurn(ctx)
		}
	}
	winEnd := time.Now()
	if e.cfg.Mode == modeChurn {
		res.ConnectPhaseS = winEnd.Sub(winStart).Seconds()
	}

	// Stop: idle phones are released at once, active phones get the drain
	// time for their outstanding replies.
	e.phase.Store("drain")
	if e.cfg.Mode == modeIdle {
		e.stop(time.Now())
	} else {
		e.stop(time.Now().Add(e.cfg.Drain))
	}
	// Every phone goroutine ends within drain (replies) + drain (close
	// handshake); past that, drop every socket.
	if !waitTimeout(&e.phWG, 2*e.cfg.Drain+time.Second) {
		e.errs.add("stuck_at_end", 1)
		e.abortAll()
		e.phWG.Wait()
	}
	e.phase.Store("close")
	e.closeBinaries()
	e.phase.Store("done")

	res.WindowS = winEnd.Sub(winStart).Seconds()
	res.fill(e)
	res.Interrupted = ctx.Err() == context.Canceled
	res.TimedOut = ctx.Err() == context.DeadlineExceeded
	return res
}

// runChurn starts churn cycles at the paced rate for the duration, each on
// one of the process's phone slots (so a server-id never has more phones
// than --phones-per-binary).
func (e *engine) runChurn(ctx context.Context) {
	slots := make(chan int, e.sh.phones)
	for i := range e.sh.phones {
		slots <- i
	}
	dctx, cancel := context.WithTimeout(ctx, e.cfg.Duration)
	defer cancel()
	per := e.cfg.PhonesPerBinary
	pace(dctx, e.sh.rate, -1, e.stopCh, func(i int) bool {
		var s int
		select {
		case s = <-slots:
		case <-dctx.Done():
			return false
		}
		id := int64(i)*int64(e.sh.procs) + int64(e.sh.index)
		e.phWG.Add(1)
		go func() {
			defer e.phWG.Done()
			defer func() { slots <- s }()
			e.churnCycle(e.serverID(s/per), id)
		}()
		return true
	})
}

// abortAll drops every phone socket at once.
func (e *engine) abortAll() {
	e.connsMu.Lock()
	for c := range e.conns {
		_ = c.Close()
	}
	e.connsMu.Unlock()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// snapshot is the progress line's content.
func (e *engine) snapshot() progress {
	ph, _ := e.phase.Load().(string)
	return progress{
		Type: "progress", Phase: ph,
		Live: e.live.Load(), Attempts: e.attempts.Load(), ConnOK: e.connOK.Load(),
		RoundTrips: e.roundTrips.Load(), Cycles: e.cycles.Load(), Sends: e.sends.Load(),
		Errors: e.errs.total.Load(), ConnFail: e.connFails.total.Load(),
	}
}

// acceptReply verifies one reply of phone p, which expects sequence number
// want and has sent up to next-1, and counts what is wrong with it. It
// returns the reply's sequence number and whether it is one to time.
// Replies skipped over are counted lost, and the phone goes on from seq.
func (e *engine) acceptReply(p *phone, b []byte, want, next uint64) (uint64, bool) {
	seq, kind, re := p.v.check(b)
	if re {
		e.reencoded.Add(1)
	}
	if kind != "" {
		e.errs.add(kind, 1)
		return 0, false
	}
	if seq < want || seq >= next {
		e.errs.add("unexpected_seq", 1)
		return 0, false
	}
	if seq != want {
		e.errs.add("out_of_order", 1)
		e.errs.add("lost", int64(seq-want))
	}
	return seq, true
}
