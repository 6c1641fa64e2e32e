package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"switchboard/internal/wsclient"
)

// engine drives one process's share of a run: its binaries (binaries.go),
// its phones (phones.go; what they do in each mode is in modes.go), and the
// counters its progress lines and result are made of.
type engine struct {
	cfg   Config
	sh    share
	local []net.Addr
	start time.Time

	nextLocal atomic.Uint64

	// Counters; everything a progress line shows.
	phase       atomic.Value // string
	live        atomic.Int64 // phones connected (warm-up echoed) and not yet gone
	peakLive    atomic.Int64
	attempts    atomic.Int64 // phone connects attempted
	connOK      atomic.Int64 // phone connects that completed the warm-up round trip
	roundTrips  atomic.Int64 // verified round trips (warm-ups included in idle/churn)
	windowTrips atomic.Int64 // active: round trips completed inside the window
	cycles      atomic.Int64 // churn: connect, echo, close cycles completed
	notices     atomic.Int64 // close notices the binaries received
	echoed      atomic.Int64 // envelopes the binaries echoed
	reencoded   atomic.Int64 // replies equal only after JSON decoding
	retries     atomic.Int64 // phone connects retried after a 4404
	sends       atomic.Int64 // active: phone messages sent (all inside the window)
	// The relay's drain (drain.go): connections it closed with 1001, and
	// the messages drained phones still had in flight.
	drainedPhones   atomic.Int64
	drainedBinaries atomic.Int64
	unanswered      atomic.Int64
	errs            kinds
	connFails       kinds
	lat, connLat    *recorder
	lag             *recorder // open loop: how late each send left after its scheduled time
	latSend         *recorder // open loop: round trip from the actual send (uncorrected)

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

// abortAll drops every phone socket at once.
func (e *engine) abortAll() {
	e.connsMu.Lock()
	for c := range e.conns {
		_ = c.Close()
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

// snapshot is the progress line's content.
func (e *engine) snapshot() progress {
	ph, _ := e.phase.Load().(string)
	return progress{
		Type: "progress", Phase: ph,
		Live: e.live.Load(), Attempts: e.attempts.Load(), ConnOK: e.connOK.Load(),
		RoundTrips: e.roundTrips.Load(), Cycles: e.cycles.Load(), Sends: e.sends.Load(),
		Errors: e.errs.total.Load(), ConnFail: e.connFails.total.Load(),
		Drained: e.drainedPhones.Load() + e.drainedBinaries.Load(),
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
