package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"switchboard/internal/wsclient"
)

// --mode flood: peers that write as fast as loopback lets them, beside a
// calm pair whose latency is the figure of merit (see the package comment).

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

// FloodResult is what --mode flood adds to a Result. The calm pair's round
// trips are the Result's latency histogram and round trips.
type FloodResult struct {
	Scenario  string `json:"scenario"`
	Flooders  int    `json:"flooders"`
	Receivers int    `json:"receivers"` // reading phones (binaries-to-phones), reading binaries (phones-to-binary), deaf binaries
	Size      int    `json:"size"`

	Sent          int64   `json:"sent"` // flood messages written whole
	SentBytes     int64   `json:"sent_bytes"`
	OfferedMBps   float64 `json:"offered_mb_per_s"` // sent bytes per second of window, 10^6 bytes
	Received      int64   `json:"received"`         // flood messages the receivers read (verified)
	ReceivedBytes int64   `json:"received_bytes"`   // their inner frames' bytes
	DeliveredMBps float64 `json:"delivered_mb_per_s"`
	// Undelivered is sent minus received once the flooders stopped and the
	// receivers caught up (up to --drain); not counted for deaf-binary.
	Undelivered int64 `json:"undelivered"`
	// CutAtEnd: flood writes still blocked when the drain ran out (the
	// relay was not reading that sender at all).
	CutAtEnd int64 `json:"cut_at_end"`

	FlooderDisconnects  map[string]int64 `json:"flooder_disconnects"`  // close_<code> or a socket error kind
	ReceiverDisconnects map[string]int64 `json:"receiver_disconnects"` // the same for the reading side
	Redials             int64            `json:"redials"`              // phone flooders that dialled again after a disconnect

	Calm    CalmSummary    `json:"calm"`
	RSS     RSSSummary     `json:"rss"`
	Metrics *MetricSummary `json:"metrics,omitempty"`

	// Aborted: the relay's RSS passed --max-rss and the flooders were stopped.
	Aborted bool `json:"aborted"`
}

// CalmSummary is the calm pair beside the flood.
type CalmSummary struct {
	IntervalMS float64 `json:"interval_ms"`
	Size       int     `json:"size"`
	Sent       int64   `json:"sent"`
	Replies    int64   `json:"count"`
	P50US      float64 `json:"p50_us"`
	P99US      float64 `json:"p99_us"`
	MaxUS      float64 `json:"max_us"`
	Lost       int64   `json:"lost"` // no reply by the end of the drain
	Late       int64   `json:"late"` // replied after more than 1 s
}

// RSSSummary is the relay process's resident set, sampled every 100 ms.
type RSSSummary struct {
	PID        int     `json:"pid"` // 0: not sampled (no --relay-pid)
	Samples    int64   `json:"samples"`
	PeakBytes  int64   `json:"peak_bytes"`
	StartBytes int64   `json:"window_start_bytes"`
	EndBytes   int64   `json:"window_end_bytes"`
	FinalBytes int64   `json:"final_bytes"`
	CapBytes   int64   `json:"cap_bytes"`
	ReadErrors int64   `json:"read_errors"`
	PeakAtS    float64 `json:"peak_at_s"` // seconds into the window (negative: before it)
}

// MetricSummary is what the relay's /metrics said (--metrics-url).
type MetricSummary struct {
	Samples           int64            `json:"samples"`
	FetchErrors       int64            `json:"fetch_errors"`
	BufferedBytesPeak int64            `json:"buffered_bytes_peak"` // -1: the relay exports no switchboard_buffered_bytes
	ReadPausedPeak    int64            `json:"read_paused_peak"`    // -1: not exported
	ReadPausesTotal   int64            `json:"read_pauses_total"`   // at the end; -1: not exported
	ReadPauses        map[string]int64 `json:"read_pauses"`         // by reason, non-zero only
	Closes            map[string]int64 `json:"closes"`              // switchboard_closes_total by reason, non-zero only
	Drops             map[string]int64 `json:"drops"`               // switchboard_drops_total by reason, non-zero only
}

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
	c, err := wsclient.Dial(f.cfg.Addr, wsclient.Options{Timeout: f.cfg.DialTimeout, Local: f.localAddr()}, wsclient.Request{Path: path, Header: f.headers(serverID, phone)})
	if err != nil {
		return nil, err
	}
	f.connsMu.Lock()
	f.all = append(f.all, c)
	f.connsMu.Unlock()
	return c, nil
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

// ---- the calm pair ----

// connectCalm connects the calm binary (an echo) and phone, with one
// warm-up round trip; it returns the phone, or nil when that failed.
func (f *flood) connectCalm() *wsclient.Client {
	id := f.serverID("calm", 0)
	b, err := f.dial(id, false)
	if err != nil {
		f.connFails.add("calm_binary_"+dialKind(err), 1)
		return nil
	}
	bw := f.watch(b, func(p []byte) {
		if isCloseNotice(p) {
			return
		}
		if err := b.WriteText(p); err != nil && !f.closing.Load() {
			f.errs.add("calm_binary_write_"+ioKind(err), 1)
		}
	})
	go func() {
		<-bw.done
		if bw.kind != "" {
			f.errs.add("calm_binary_"+bw.kind, 1)
		}
	}()
	p, err := f.dialPhone(id)
	if err != nil {
		f.connFails.add("calm_phone_"+dialKind(err), 1)
		return nil
	}
	_ = p.Conn.SetDeadline(time.Now().Add(f.cfg.ReplyTimeout))
	msg := appendPayload(nil, calmID, 0, f.cfg.CalmSize)
	if err := p.WriteText(msg); err != nil {
		f.connFails.add("calm_warmup_write_"+ioKind(err), 1)
		return nil
	}
	op, r, err := p.ReadFrame()
	if err != nil {
		f.connFails.add("calm_warmup_"+readKind(err, r), 1)
		return nil
	}
	if op != 0x1 || !bytes.Equal(r, msg) {
		f.errs.add("calm_warmup_mismatch", 1)
		return nil
	}
	_ = p.Conn.SetDeadline(time.Time{})
	return p
}

// dialPhone dials a phone. A relay that registers a binary only after its
// 101 (the reference) may refuse it 4404: that shows up as a disconnect.
func (f *flood) dialPhone(serverID string) (*wsclient.Client, error) {
	return f.dial(serverID, true)
}

// runCalm sends a calm message every interval during the window, each
// timed from its scheduled send time, and reads the echoes.
func (f *flood) runCalm(p *wsclient.Client) {
	v := verifier{id: calmID, size: f.cfg.CalmSize}
	w := f.watch(p, func(b []byte) {
		now := f.since()
		seq, kind, _ := v.check(b)
		if kind != "" {
			f.errs.add("calm_"+kind, 1)
			return
		}
		if seq == 0 || seq >= uint64(len(f.calmDue)) || f.calmDue[seq].Load() == 0 || f.calmGot[seq].Swap(true) {
			f.errs.add("calm_unexpected_seq", 1)
			return
		}
		rtt := now - time.Duration(f.calmDue[seq].Load())
		f.calmLat.record(0, rtt)
		f.calmReplies.Add(1)
		if rtt > calmLate {
			f.calmLate.Add(1)
		}
	})
	f.writers.Add(1)
	go func() {
		defer f.writers.Done()
		select {
		case <-f.startCh:
		case <-f.stopCh:
			return
		}
		base := f.winAt
		out := make([]byte, 0, f.cfg.CalmSize)
		for seq := 1; seq < len(f.calmDue) && !f.stopping.Load(); seq++ {
			due := base + time.Duration(seq)*f.cfg.CalmInterval
			if wait := due - f.since(); wait > 0 && !f.sleep(wait) {
				return
			}
			f.calmDue[seq].Store(int64(due))
			out = appendPayload(out[:0], calmID, uint64(seq), f.cfg.CalmSize)
			if err := p.WriteText(out); err != nil {
				if !f.closing.Load() {
					f.errs.add("calm_write_"+ioKind(err), 1)
				}
				return
			}
			f.calmSent.Add(1)
		}
	}()
	go func() {
		<-w.done
		if w.kind != "" && !(f.stopping.Load() && w.kind == "timeout") {
			f.errs.add("calm_phone_"+w.kind, 1)
		}
	}()
}

// ---- the scenarios ----

// setupBinariesToPhones connects N binaries, each with one reading phone;
// each binary floods envelopes addressed to its phone.
func (f *flood) setupBinariesToPhones(ctx context.Context) int {
	n := f.cfg.Flooders
	var ok atomic.Int64
	var wg sync.WaitGroup
	pace(ctx, f.cfg.ConnectRate/2, n, f.stopCh, func(i int) bool {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f.setupBinaryFlooder(i) {
				ok.Add(1)
			}
		}()
		return true
	})
	wg.Wait()
	return int(ok.Load())
}

func (f *flood) setupBinaryFlooder(i int) bool {
	id := f.serverID("f", i)
	b, err := f.dial(id, false)
	if err != nil {
		f.connFails.add("binary_"+dialKind(err), 1)
		return false
	}
	p, err := f.dialPhone(id)
	if err != nil {
		f.connFails.add(dialKind(err), 1)
		return false
	}
	// The phone says hello so the binary learns its conn_id.
	_ = p.Conn.SetDeadline(time.Now().Add(f.cfg.ReplyTimeout))
	_ = b.Conn.SetDeadline(time.Now().Add(f.cfg.ReplyTimeout))
	if err := p.WriteText([]byte(`{"hello":1}`)); err != nil {
		f.connFails.add("hello_write_"+ioKind(err), 1)
		return false
	}
	_, env, err := b.ReadFrame()
	if err != nil {
		f.connFails.add("binary_hello_"+readKind(err, env), 1)
		return false
	}
	cid, ok := envelopeConnID(env)
	if !ok {
		f.errs.add("bad_envelope", 1)
		return false
	}
	_ = p.Conn.SetDeadline(time.Time{})
	_ = b.Conn.SetDeadline(time.Time{})
	// {"conn_id":"<cid>","frame":{"p":"<pad>"}} of exactly --size bytes.
	head := `{"conn_id":"` + cid + `","frame":`
	innerLen := f.cfg.Size - len(head) - 1
	if innerLen < 8 {
		f.errs.add("size_below_envelope", 1)
		return false
	}
	inner := make([]byte, 0, innerLen)
	inner = append(inner, `{"p":"`...)
	inner = append(inner, padAlphabet[:innerLen-8]...)
	inner = append(inner, `"}`...)
	msg := append(append([]byte(head), inner...), '}')
	frame := wsclient.AppendMasked(nil, wsclient.OpText, msg)

	pw := f.watch(p, func(b []byte) {
		if !bytes.Equal(b, inner) {
			f.errs.add("flood_frame_mismatch", 1)
			return
		}
		f.recv.Add(1)
		f.recvBytes.Add(int64(len(b)))
	})
	go func() {
		<-pw.done
		if pw.kind != "" && !(f.stopping.Load() && pw.kind == "timeout") {
			f.receiverDisc.add(pw.kind, 1)
		}
	}()
	bw := f.watch(b, nil) // close notices and pings
	f.trackFlooder(b, true)
	f.writers.Add(1)
	go func() {
		defer f.writers.Done()
		err := f.floodWrite(b, frame, len(msg))
		f.flooderEnded(bw, err)
	}()
	return true
}

// envelopeConnID reads the conn_id of a relay→binary frame envelope.
func envelopeConnID(p []byte) (string, bool) {
	const head = `{"conn_id":"`
	if !bytes.HasPrefix(p, []byte(head)) {
		return "", false
	}
	end := bytes.IndexByte(p[len(head):], '"')
	if end <= 0 {
		return "", false
	}
	return string(p[len(head) : len(head)+end]), true
}

// setupPhonesToBinary connects ceil(N/--phones-per-binary) binaries, reading
// (phones-to-binary) or deaf, then N phone flooders spread over them. It
// returns how many phones and binaries connected.
func (f *flood) setupPhonesToBinary(ctx context.Context, deaf bool) (phones, binaries int) {
	per := f.cfg.PhonesPerBinary
	nb := binariesFor(f.cfg.Flooders, per)
	ids := make([]string, nb)
	up := make([]bool, nb)
	for j := range nb {
		ids[j] = f.serverID("r", j)
		b, err := f.dial(ids[j], false)
		if err != nil {
			f.connFails.add("binary_"+dialKind(err), 1)
			continue
		}
		up[j] = true
		binaries++
		if deaf {
			continue // completes the handshake, never reads
		}
		bw := f.watch(b, func(p []byte) {
			if isCloseNotice(p) {
				return
			}
			// {"conn_id":"…","frame":<exactly the phone's --size bytes>}
			cid, ok := envelopeConnID(p)
			inner := len(p) - len(`{"conn_id":"","frame":}`) - len(cid)
			if !ok || inner != f.cfg.Size || p[len(p)-1] != '}' {
				f.errs.add("flood_frame_mismatch", 1)
				return
			}
			f.recv.Add(1)
			f.recvBytes.Add(int64(inner))
		})
		go func() {
			<-bw.done
			if bw.kind != "" && !(f.stopping.Load() && bw.kind == "timeout") {
				f.receiverDisc.add("binary_"+bw.kind, 1)
			}
		}()
	}
	ok := 0
	pace(ctx, f.cfg.ConnectRate, f.cfg.Flooders, f.stopCh, func(i int) bool {
		if !up[i/per] {
			return true
		}
		p, err := f.dialPhone(ids[i/per])
		if err != nil {
			f.connFails.add(dialKind(err), 1)
			return true
		}
		ok++
		f.writers.Add(1)
		go func() {
			defer f.writers.Done()
			f.phoneFlooder(int64(i), ids[i/per], p)
		}()
		return true
	})
	return ok, binaries
}

// phoneFlooder floods from one phone slot; when the relay disconnects it
// during the window, it dials again after a pause (bounded by the window
// and maxRedials).
func (f *flood) phoneFlooder(id int64, serverID string, p *wsclient.Client) {
	msg := appendPayload(nil, id, 1, f.cfg.Size)
	frame := wsclient.AppendMasked(nil, wsclient.OpText, msg)
	for try := 0; ; try++ {
		w := f.watch(p, nil)
		f.trackFlooder(p, true)
		if f.stopping.Load() {
			_ = p.Conn.SetWriteDeadline(time.Now().Add(f.cfg.Drain))
		}
		err := f.floodWrite(p, frame, len(msg))
		f.trackFlooder(p, false)
		f.flooderEnded(w, err)
		if err == nil || f.stopping.Load() || try >= maxRedials || !f.sleep(redialPause) {
			return
		}
		np, derr := f.dialPhone(serverID)
		if derr != nil {
			if !f.stopping.Load() {
				f.connFails.add("redial_"+dialKind(derr), 1)
			}
			return
		}
		f.redials.Add(1)
		p = np
	}
}

// ---- relay observation ----

// readRSS returns VmRSS of pid in bytes.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fs := strings.Fields(rest)
			if len(fs) == 2 && fs[1] == "kB" {
				kb, err := strconv.ParseInt(fs[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

func (f *flood) sampleRSS() {
	v, err := readRSS(f.cfg.RelayPID)
	if err != nil {
		f.rssErrs.Add(1)
		return
	}
	f.rssSamples.Add(1)
	f.rssLast.Store(v)
	if v > f.rssPeak.Load() {
		f.rssPeak.Store(v) // one sampler goroutine: no lost update
		f.rssPeakAt.Store(int64(f.since()))
	}
	if v > f.cfg.MaxRSS {
		f.abort()
	}
}

// metricsSampler polls --metrics-url.
type metricsSampler struct {
	url        string
	client     *http.Client
	mu         sync.Mutex
	samples    int64
	errs       int64
	bufPeak    int64
	pausedPeak int64
	last       map[string]float64
}

func newMetricsSampler(u string) *metricsSampler {
	return &metricsSampler{url: u, client: &http.Client{Timeout: 2 * time.Second}, bufPeak: -1, pausedPeak: -1}
}

func (m *metricsSampler) sample() {
	vals, err := fetchMetrics(m.client, m.url)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.errs++
		return
	}
	m.samples++
	m.last = vals
	if v, ok := vals["switchboard_buffered_bytes"]; ok {
		m.bufPeak = max(m.bufPeak, int64(v))
	}
	if v, ok := vals["switchboard_read_paused"]; ok {
		m.pausedPeak = max(m.pausedPeak, int64(v))
	}
}

func (m *metricsSampler) summary() *MetricSummary {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &MetricSummary{Samples: m.samples, FetchErrors: m.errs, BufferedBytesPeak: m.bufPeak, ReadPausedPeak: m.pausedPeak,
		ReadPausesTotal: -1, ReadPauses: map[string]int64{}, Closes: map[string]int64{}, Drops: map[string]int64{}}
	for k, v := range m.last {
		name, reason := splitMetric(k)
		if v == 0 {
			if name == "switchboard_read_pauses_total" && s.ReadPausesTotal < 0 {
				s.ReadPausesTotal = 0
			}
			continue
		}
		switch name {
		case "switchboard_read_pauses_total":
			s.ReadPausesTotal = max(s.ReadPausesTotal, 0) + int64(v)
			s.ReadPauses[reason] += int64(v)
		case "switchboard_closes_total":
			s.Closes[reason] += int64(v)
		case "switchboard_drops_total":
			s.Drops[reason] += int64(v)
		}
	}
	return s
}

// fetchMetrics reads a Prometheus text page into series → value.
func fetchMetrics(c *http.Client, u string) (map[string]float64, error) {
	resp, err := c.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil, fmt.Errorf("metrics: HTTP %d", resp.StatusCode)
	}
	return parseMetrics(io.LimitReader(resp.Body, 16<<20))
}

func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[strings.TrimSpace(line[:i])] = v
	}
	return out, sc.Err()
}

// splitMetric splits `name{reason="x"}` into name and x.
func splitMetric(series string) (name, reason string) {
	name, labels, ok := strings.Cut(series, "{")
	if !ok {
		return series, ""
	}
	if _, rest, ok := strings.Cut(labels, `reason="`); ok {
		reason, _, _ = strings.Cut(rest, `"`)
	}
	return name, reason
}

// ---- the run ----

// runFlood performs one flood run in this process.
func runFlood(ctx context.Context, cfg Config, stderr io.Writer) *Result {
	f := newFlood(cfg)
	f.start = time.Now()
	f.phase.Store("connect")
	res := &Result{Mode: modeFlood, Addr: cfg.Addr, Procs: 1, Size: cfg.Size}
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

// Failed reports a flood run that should fail the command: the --max-rss
// cap was hit, a calm message was lost, or, where every peer is honest (all but deaf-binary), a
// peer was disconnected or a flood message did not arrive.
func (fr *FloodResult) Failed() bool {
	if fr.Aborted || fr.Calm.Lost > 0 {
		return true
	}
	if fr.Scenario == scenDeafBinary {
		return false
	}
	return sumKinds(fr.FlooderDisconnects)+sumKinds(fr.ReceiverDisconnects) > 0 || fr.Undelivered > 0
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// ---- flags ----

// byteSize is a flag holding a byte count: 4294967296, 4GiB, 512MiB, 64KiB.
type byteSize struct{ v *int64 }

func (b byteSize) String() string {
	if b.v == nil {
		return ""
	}
	return strconv.FormatInt(*b.v, 10)
}

func (b byteSize) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	*b.v = n
	return nil
}

func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(t, u.suf); ok {
			t, mult = strings.TrimSpace(rest), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad byte count %q (want e.g. 4294967296, 4GiB, 512MiB)", s)
	}
	return n * mult, nil
}

// loopbackHost reports whether host (a name or an address) is loopback.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// validateFlood checks what --mode flood adds.
func (c *Config) validateFlood() error {
	switch {
	case c.Scenario != scenBinariesToPhones && c.Scenario != scenPhonesToBinary && c.Scenario != scenDeafBinary:
		return fmt.Errorf("--scenario must be %s, %s or %s, got %q", scenBinariesToPhones, scenPhonesToBinary, scenDeafBinary, c.Scenario)
	case c.Procs != 1:
		return fmt.Errorf("--mode flood runs in one process (--procs 1)")
	case c.Flooders < 1:
		return fmt.Errorf("--flooders must be at least 1, got %d", c.Flooders)
	case c.Size < minFloodSize || c.Size > maxPayload:
		return fmt.Errorf("--size must be in %d..%d for --mode flood, got %d", minFloodSize, maxPayload, c.Size)
	case c.CalmInterval < 100*time.Microsecond:
		return fmt.Errorf("--calm-interval must be at least 100µs, got %s", c.CalmInterval)
	case c.Duration/c.CalmInterval >= maxCalmSends:
		return fmt.Errorf("--duration / --calm-interval must stay under %d calm messages", maxCalmSends)
	case c.CalmSize < minPayload || c.CalmSize > maxCalmSize:
		return fmt.Errorf("--calm-size must be in %d..%d, got %d", minPayload, maxCalmSize, c.CalmSize)
	case c.MaxRSS <= 0:
		return fmt.Errorf("--max-rss must be positive")
	case c.RelayPID < 0:
		return fmt.Errorf("--relay-pid must not be negative")
	}
	host, _, _ := net.SplitHostPort(c.Addr)
	if !loopbackHost(host) {
		return fmt.Errorf("--mode flood only dials loopback addresses, not %q", c.Addr)
	}
	if c.MetricsURL != "" {
		u, err := url.Parse(c.MetricsURL)
		if err != nil || u.Scheme != "http" || !loopbackHost(u.Hostname()) {
			return fmt.Errorf("--metrics-url must be an http:// URL on a loopback address, got %q", c.MetricsURL)
		}
	}
	if c.RelayPID > 0 {
		if _, err := readRSS(c.RelayPID); err != nil {
			return fmt.Errorf("--relay-pid: %v", err)
		}
	}
	// Sockets: the calm pair, the flooders and their counterparts.
	need := 2 + c.Flooders + binariesFor(c.Flooders, c.PhonesPerBinary)
	if c.Scenario == scenBinariesToPhones {
		need = 2 + 2*c.Flooders
	}
	if need > socketBudget {
		return fmt.Errorf("--flooders %d needs %d sockets, over the %d one process may hold", c.Flooders, need, socketBudget)
	}
	return nil
}
