package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"switchboard/internal/wsclient"
)

// --mode flood: peers that write as fast as loopback lets them, beside a
// calm pair whose latency is the figure of merit (see the package comment).
// Here are the run and what its peers share; the calm pair is in
// floodcalm.go, each scenario's peers in floodscenarios.go, the watch on the
// relay in floodobserve.go, what the run reports in floodresult.go and the
// flags' checks in floodconfig.go.

// Flood scenarios.
const (
	scenBinariesToPhones = "binaries-to-phones"
	scenPhonesToBinary   = "phones-to-binary"
	scenDeafBinary       = "deaf-binary"
)

const (
	defaultFloodSize    = 200 << 10
	minFloodSize        = 200
	defaultFlooders     = 1
	defaultCalmInterval = 10 * time.Millisecond
	defaultCalmSize     = 64
	maxCalmSize         = 4096
	defaultMaxRSS       = 4 << 30
	// calmLate is the round trip past which a calm message counts as late.
	calmLate = time.Second
	// maxCalmSends bounds the calm pair's bookkeeping (one slot per send).
	maxCalmSends = 1 << 22
	rssEvery     = 100 * time.Millisecond
	metricsEvery = 250 * time.Millisecond
	// A phone flooder the relay disconnected dials again after redialPause,
	// at most maxRedials times, until the window ends.
	redialPause = 100 * time.Millisecond
	maxRedials  = 1000
	// drainQuiet ends the wait for stragglers after the window once nothing
	// has arrived for this long.
	drainQuiet = 1500 * time.Millisecond
	// calmID is the calm phone's id in its payloads.
	calmID = 1 << 40
)

// flood is one flood run.
type flood struct {
	cfg   Config
	local []net.Addr
	start time.Time
	winAt time.Duration // window start since start; set before startCh closes

	nextLocal atomic.Uint64
	phase     atomic.Value // string

	sent, sentBytes atomic.Int64
	recv, recvBytes atomic.Int64
	cut             atomic.Int64
	redials         atomic.Int64
	calmSent        atomic.Int64
	calmReplies     atomic.Int64
	calmLate        atomic.Int64
	errs            kinds
	connFails       kinds
	flooderDisc     kinds
	receiverDisc    kinds
	calmLat         *recorder
	calmDue         []atomic.Int64 // due time (since start) of calm seq i, 0 = not sent
	calmGot         []atomic.Bool

	rssPeak, rssLast, rssSamples, rssErrs atomic.Int64
	rssPeakAt                             atomic.Int64 // since start, ns
	aborted                               atomic.Bool
	abortCh                               chan struct{}
	abortOnce                             sync.Once

	startCh  chan struct{}
	stopping atomic.Bool // the window is over: flooders finish the message they are writing
	stopCh   chan struct{}
	stopOnce sync.Once
	closing  atomic.Bool // teardown: connection ends are no longer disconnects

	connsMu  sync.Mutex
	flooders map[*wsclient.Client]struct{} // for write deadlines and abort
	all      []*wsclient.Client

	writers sync.WaitGroup // flood writers (and phone flooder slots)
	readers sync.WaitGroup // every read loop
}

func newFlood(cfg Config) *flood {
	n := int(min(cfg.Duration/cfg.CalmInterval+2, maxCalmSends))
	return &flood{
		cfg:      cfg,
		local:    sourceAddrs(cfg.Addr, cfg.SourceIPs),
		calmLat:  newRecorder(1),
		calmDue:  make([]atomic.Int64, n),
		calmGot:  make([]atomic.Bool, n),
		abortCh:  make(chan struct{}),
		startCh:  make(chan struct{}),
		stopCh:   make(chan struct{}),
		flooders: make(map[*wsclient.Client]struct{}),
	}
}

func (f *flood) since() time.Duration { return time.Since(f.start) }

func (f *flood) localAddr() net.Addr {
	if len(f.local) == 0 {
		return nil
	}
	return f.local[(f.nextLocal.Add(1)-1)%uint64(len(f.local))]
}

func (f *flood) serverID(kind string, i int) string {
	return fmt.Sprintf("swload-%s-%s%d", f.cfg.RunID, kind, i)
}

func (f *flood) headers(serverID string, phone bool) http.Header {
	h := http.Header{"X-Pyrycode-Server": {serverID}, "User-Agent": {"swload/1"}}
	if phone {
		h["X-Pyrycode-Token"] = []string{"swload"}
	} else {
		h["X-Pyrycode-Version"] = []string{"2"}
	}
	return h
}

func (f *flood) dial(serverID string, phone bool) (*wsclient.Client, error) {
	path := "/v1/server"
	if phone {
		path = "/v1/client"
	}
	c, err := wsclient.Dial(f.cfg.Addr, f.cfg.dialOptions(f.localAddr()), wsclient.Request{Path: path, Header: f.headers(serverID, phone)})
	if err != nil {
		return nil, err
	}
	f.connsMu.Lock()
	f.all = append(f.all, c)
	f.connsMu.Unlock()
	return c, nil
}

// dialPhone dials a phone. A relay that registers a binary only after its
// 101 (the reference) may refuse it 4404: that shows up as a disconnect.
func (f *flood) dialPhone(serverID string) (*wsclient.Client, error) {
	return f.dial(serverID, true)
}

func (f *flood) trackFlooder(c *wsclient.Client, on bool) {
	f.connsMu.Lock()
	if on {
		f.flooders[c] = struct{}{}
	} else {
		delete(f.flooders, c)
	}
	f.connsMu.Unlock()
}

// stop ends the window: flooders finish the message they are writing
// (bounded by the drain) and write no more.
func (f *flood) stop() {
	f.stopOnce.Do(func() {
		f.stopping.Store(true)
		close(f.stopCh)
		t := time.Now().Add(f.cfg.Drain)
		f.connsMu.Lock()
		for c := range f.flooders {
			_ = c.Conn.SetWriteDeadline(t)
		}
		f.connsMu.Unlock()
	})
}

// abort is the --max-rss cap: stop the flooders now, mid-message.
func (f *flood) abort() {
	f.abortOnce.Do(func() {
		f.aborted.Store(true)
		close(f.abortCh)
		f.stop()
		f.connsMu.Lock()
		for c := range f.flooders {
			_ = c.Close()
		}
		f.connsMu.Unlock()
	})
}

// sleep waits d unless the window stops first; it reports whether d passed.
func (f *flood) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-f.stopCh:
		return false
	}
}

// ---- connection ends ----

// endKind names how a connection's read side ended.
func endKind(err error, payload []byte) string { return readKind(err, payload) }

// watcher is a connection's read loop for the flood: it answers pings
// (ReadFrame does), hands text frames to onFrame and records how the
// connection ended, closing it so a writer on it stops too.
type watcher struct {
	c    *wsclient.Client
	done chan struct{}
	kind string // how it ended; "" while running or ended by teardown
}

func (f *flood) watch(c *wsclient.Client, onFrame func(p []byte)) *watcher {
	w := &watcher{c: c, done: make(chan struct{})}
	f.readers.Add(1)
	go func() {
		defer f.readers.Done()
		defer close(w.done)
		for {
			op, p, err := c.ReadFrame()
			if err != nil {
				if !f.closing.Load() {
					w.kind = endKind(err, p)
				}
				_ = c.Close()
				return
			}
			if op != 0x1 {
				f.errs.add("unexpected_opcode", 1)
				continue
			}
			if onFrame != nil {
				onFrame(p)
			}
		}
	}()
	return w
}

// floodWrite writes frame (one whole masked WebSocket frame of payload
// bytes) back to back from the window's start until it stops. It returns
// the write error, nil when the window ended.
func (f *flood) floodWrite(c *wsclient.Client, frame []byte, payload int) error {
	select {
	case <-f.startCh:
	case <-f.stopCh:
		return nil
	}
	for !f.stopping.Load() {
		if _, err := c.Conn.Write(frame); err != nil {
			if f.stopping.Load() && isTimeout(err) {
				f.cut.Add(1)
				return nil
			}
			return err
		}
		f.sent.Add(1)
		f.sentBytes.Add(int64(payload))
	}
	return nil
}

// flooderEnded records why a flooder's connection ended during the window:
// the relay's close code when its read loop saw one, else the write error.
func (f *flood) flooderEnded(w *watcher, werr error) {
	if werr == nil {
		return // the window ended with the connection up
	}
	// The read loop usually has the close frame that explains a failed
	// write; give it a moment.
	_ = w.c.Conn.SetReadDeadline(time.Now().Add(time.Second))
	<-w.done
	if f.closing.Load() || f.aborted.Load() {
		return
	}
	kind := w.kind
	if kind == "" || kind == "timeout" || kind == "closed" {
		kind = "write_" + ioKind(werr)
	}
	f.flooderDisc.add(kind, 1)
}

// ---- the run ----

// runFlood performs one flood run in this process.
func runFlood(ctx context.Context, cfg Config, stderr io.Writer) *Result {
	f := newFlood(cfg)
	f.start = time.Now()
	f.phase.Store("connect")
	res := &Result{Mode: modeFlood, Addr: cfg.target(), Procs: 1, Size: cfg.Size}
	fr := &FloodResult{Scenario: cfg.Scenario, Flooders: cfg.Flooders, Size: cfg.Size,
		RSS: RSSSummary{PID: cfg.RelayPID, CapBytes: cfg.MaxRSS}}
	res.Flood = fr

	var stopRSS func()
	if cfg.RelayPID > 0 {
		f.sampleRSS()
		stopRSS = everyTick(rssEvery, f.sampleRSS)
	}
	var ms *metricsSampler
	var stopMetrics func()
	if cfg.MetricsURL != "" {
		ms = newMetricsSampler(cfg.MetricsURL)
		ms.sample()
		stopMetrics = everyTick(metricsEvery, ms.sample)
	}
	var lastSent, lastRecv int64
	last := time.Now()
	stopProgress := everyTick(cfg.Progress, func() {
		now := time.Now()
		dt := now.Sub(last).Seconds()
		s, r := f.sentBytes.Load(), f.recvBytes.Load()
		ph, _ := f.phase.Load().(string)
		fmt.Fprintf(stderr, "swload %6.1fs %-7s sent %d (%.0f MB/s)  received %d (%.0f MB/s)  calm %d/%d  rss %s (peak %s)  disconnects %d  errors %d\n",
			f.since().Seconds(), ph, f.sent.Load(), float64(s-lastSent)/dt/1e6, f.recv.Load(), float64(r-lastRecv)/dt/1e6,
			f.calmReplies.Load(), f.calmSent.Load(), mib(f.rssLast.Load()), mib(f.rssPeak.Load()),
			f.flooderDisc.total.Load()+f.receiverDisc.total.Load(), f.errs.total.Load())
		last, lastSent, lastRecv = now, s, r
	})

	calm := f.connectCalm()
	connected := 0
	connectStart := time.Now()
	if calm != nil && ctx.Err() == nil {
		switch cfg.Scenario {
		case scenBinariesToPhones:
			connected = f.setupBinariesToPhones(ctx)
			fr.Receivers = connected
			res.Binaries, res.Phones = connected, connected
		case scenPhonesToBinary, scenDeafBinary:
			connected, fr.Receivers = f.setupPhonesToBinary(ctx, cfg.Scenario == scenDeafBinary)
			res.Phones, res.Binaries = connected, fr.Receivers
		}
		f.runCalm(calm)
	}
	res.ConnectPhaseS = time.Since(connectStart).Seconds()
	res.ConnectsAttempted = int64(cfg.Flooders)
	res.ConnectsOK = int64(connected)
	res.Binaries++ // the calm binary
	res.Phones++   // the calm phone

	fr.RSS.StartBytes = f.rssLast.Load()
	winStart := time.Now()
	if calm != nil && connected > 0 && ctx.Err() == nil && !f.aborted.Load() {
		f.phase.Store("flood")
		f.winAt = f.since()
		close(f.startCh)
		t := time.NewTimer(cfg.Duration)
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-f.abortCh:
		}
		t.Stop()
	}
	winEnd := time.Now()
	fr.RSS.EndBytes = f.rssLast.Load()
	f.phase.Store("drain")
	f.stop()
	// Flooders finish the message in hand (their write deadline is the
	// drain), then the receivers catch up and the calm replies come in.
	if !waitTimeout(&f.writers, cfg.Drain+2*time.Second) {
		f.errs.add("stuck_at_end", 1)
	}
	// Up to the drain, until everything sent has arrived or nothing more
	// has for a while (what the relay dropped will not come).
	deadline := time.Now().Add(cfg.Drain)
	seenRecv, seenCalm, moved := int64(-1), int64(-1), time.Now()
	for time.Now().Before(deadline) && time.Since(moved) < drainQuiet {
		r, c := f.recv.Load(), f.calmReplies.Load()
		caughtUp := cfg.Scenario == scenDeafBinary || r >= f.sent.Load()
		if caughtUp && c >= f.calmSent.Load() {
			break
		}
		if r != seenRecv || c != seenCalm {
			seenRecv, seenCalm, moved = r, c, time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ms != nil {
		stopMetrics()
		ms.sample()
		fr.Metrics = ms.summary()
	}

	// Teardown: a close frame to everything, then the sockets.
	f.phase.Store("close")
	f.closing.Store(true)
	f.connsMu.Lock()
	conns := f.all
	f.connsMu.Unlock()
	bye := time.Now().Add(200 * time.Millisecond)
	for _, c := range conns {
		_ = c.Conn.SetDeadline(bye)
	}
	for _, c := range conns {
		_, _ = c.Conn.Write(closeFrame())
		_ = c.Close()
	}
	waitTimeout(&f.readers, 2*time.Second)
	stopProgress()
	if stopRSS != nil {
		stopRSS()
		f.sampleRSS()
	}

	res.WindowS = winEnd.Sub(winStart).Seconds()
	res.Latency = f.calmLat.snapshot()
	res.RoundTrips = f.calmReplies.Load()
	res.WindowRoundTrips = res.RoundTrips
	res.Sends = f.calmSent.Load()
	res.Errors = f.errs.snapshot()
	res.ConnectFailures = f.connFails.snapshot()
	res.PeakLive = int64(connected)
	if res.WindowS > 0 {
		res.ThroughputPerS = float64(res.RoundTrips) / res.WindowS
		res.RateAchievedPerS = float64(res.Sends) / res.WindowS
		res.RateTarget = float64(time.Second) / float64(cfg.CalmInterval)
	}
	if res.ConnectPhaseS > 0 {
		res.ConnectRatePerS = float64(res.ConnectsOK) / res.ConnectPhaseS
	}
	res.CPUUserS, res.CPUSysS = cpuTimes(false)

	fr.Sent, fr.SentBytes = f.sent.Load(), f.sentBytes.Load()
	fr.Received, fr.ReceivedBytes = f.recv.Load(), f.recvBytes.Load()
	if res.WindowS > 0 {
		fr.OfferedMBps = round3(float64(fr.SentBytes) / res.WindowS / 1e6)
		fr.DeliveredMBps = round3(float64(fr.ReceivedBytes) / res.WindowS / 1e6)
	}
	if cfg.Scenario != scenDeafBinary {
		fr.Undelivered = max(fr.Sent-fr.Received, 0)
	}
	fr.CutAtEnd = f.cut.Load()
	fr.FlooderDisconnects = orEmpty(f.flooderDisc.snapshot())
	fr.ReceiverDisconnects = orEmpty(f.receiverDisc.snapshot())
	fr.Redials = f.redials.Load()
	h := res.Latency
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	fr.Calm = CalmSummary{
		IntervalMS: float64(cfg.CalmInterval) / float64(time.Millisecond), Size: cfg.CalmSize,
		Sent: res.Sends, Replies: res.RoundTrips,
		P50US: us(h.Quantile(0.5)), P99US: us(h.Quantile(0.99)), MaxUS: us(time.Duration(h.Max)),
		Lost: max(res.Sends-res.RoundTrips, 0), Late: f.calmLate.Load(),
	}
	fr.RSS.Samples, fr.RSS.ReadErrors = f.rssSamples.Load(), f.rssErrs.Load()
	fr.RSS.PeakBytes, fr.RSS.FinalBytes = f.rssPeak.Load(), f.rssLast.Load()
	if fr.RSS.Samples > 0 {
		fr.RSS.PeakAtS = round3((time.Duration(f.rssPeakAt.Load()) - f.winAt).Seconds())
	}
	fr.Aborted = f.aborted.Load()
	res.Interrupted = ctx.Err() == context.Canceled
	res.TimedOut = ctx.Err() == context.DeadlineExceeded
	return res
}
