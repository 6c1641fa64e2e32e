package loop_test

// Adversarial clients (issue 4): slowloris floods and peers that stop
// answering. Each test asserts the relay ends the offenders on time and that
// everyone else keeps being served meanwhile.

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"switchboard/internal/wsclient"
	"switchboard/loop"
)

// ---- background traffic between well-behaved gorilla pairs -------------------

// advTraffic round-trips frames over rtPairs on one goroutine until stopped,
// recording when each round trip completed. Holding mu pauses it (a round
// trip in progress finishes first), so goroutine counts can settle.
type advTraffic struct {
	pairs []*rtPair
	mu    sync.Mutex
	stop  chan struct{}
	done  chan struct{}

	// Written by the traffic goroutine under mu; read by the test after stop.
	finished []time.Time     // completion time of each round trip
	lat      []time.Duration // its latency
	err      error           // first failure; the goroutine stops on it
}

func startTraffic(pairs []*rtPair) *advTraffic {
	tr := &advTraffic{pairs: pairs, stop: make(chan struct{}), done: make(chan struct{})}
	go tr.run()
	return tr
}

func (tr *advTraffic) run() {
	defer close(tr.done)
	for seq := 0; ; seq++ {
		select {
		case <-tr.stop:
			return
		default:
		}
		tr.mu.Lock()
		start := time.Now()
		err := advRoundTrip(tr.pairs[seq%len(tr.pairs)], seq)
		if err != nil {
			tr.err = fmt.Errorf("round trip %d: %w", seq, err)
			tr.mu.Unlock()
			return
		}
		now := time.Now()
		tr.finished = append(tr.finished, now)
		tr.lat = append(tr.lat, now.Sub(start))
		tr.mu.Unlock()
		time.Sleep(2 * time.Millisecond)
	}
}

// count is how many round trips have completed.
func (tr *advTraffic) count() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.finished)
}

func (tr *advTraffic) pause()  { tr.mu.Lock() }
func (tr *advTraffic) resume() { tr.mu.Unlock() }

// end stops the traffic and fails the test if any round trip failed.
func (tr *advTraffic) end(t *testing.T) {
	t.Helper()
	close(tr.stop)
	<-tr.done
	if tr.err != nil {
		t.Fatalf("normal pair failed after %d good round trips: %v", len(tr.finished), tr.err)
	}
}

// between counts round trips completed in [from, to].
func (tr *advTraffic) between(from, to time.Time) int {
	n := 0
	for _, f := range tr.finished {
		if !f.Before(from) && !f.After(to) {
			n++
		}
	}
	return n
}

// advRoundTrip is rtPair.roundTrip for a goroutine other than the test's: it
// returns errors instead of failing the test.
func advRoundTrip(pr *rtPair, seq int) error {
	msg := fmt.Sprintf(`{"seq":%d}`, seq)
	if err := pr.phone.conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		return fmt.Errorf("phone write: %w", err)
	}
	want := fmt.Sprintf(`{"conn_id":%q,"frame":%s}`, pr.connID, msg)
	if got, err := advNext(pr.binary); err != nil || string(got) != want {
		return fmt.Errorf("binary got %q (%v), want %s", got, err, want)
	}
	echo := fmt.Sprintf(`{"echo":%d}`, seq)
	if err := pr.binary.conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"conn_id":%q,"frame":%s}`, pr.connID, echo)); err != nil {
		return fmt.Errorf("binary write: %w", err)
	}
	if got, err := advNext(pr.phone); err != nil || string(got) != echo {
		return fmt.Errorf("phone got %q (%v), want %s", got, err, echo)
	}
	return nil
}

func advNext(p *peer) ([]byte, error) {
	select {
	case ev, ok := <-p.events:
		switch {
		case !ok:
			return nil, errors.New("connection ended")
		case ev.err != nil:
			return nil, ev.err
		}
		return ev.data, nil
	case <-time.After(testTimeout):
		return nil, errors.New("no message in time")
	}
}

// ---- goroutine-free watching of many raw sockets --------------------------------

// slowKind is what a slowloris client does.
type slowKind int

const (
	slowHalfHead  slowKind = iota // half a request head, then nothing
	slowHalfFrame                 // an upgraded phone: half a frame, then nothing
	slowDribble                   // a request head one byte at a time
)

func (k slowKind) String() string {
	return [...]string{"half-head", "half-frame", "dribbler"}[k]
}

// slowConn is one slowloris client. Its fields are written by the goroutine
// that owns that stage (setup, then the watcher and the dribbler) and read by
// the test only after those goroutines have stopped.
type slowConn struct {
	kind  slowKind
	nc    net.Conn
	raw   syscall.RawConn
	start time.Time // connect, or for a half frame its write: where the deadline counts from

	// Watcher side.
	ended    atomic.Bool
	endAt    time.Time // first byte from the relay, or the end of the stream
	got      []byte    // every byte the relay sent
	endErr   error     // nil for EOF, else the read error (a reset)
	sawFirst bool

	// Dribbler side.
	head     []byte
	sent     int
	lastByte time.Time
}

// slowWatcher polls every registered slowConn with non-blocking reads from
// one goroutine, so thousands of silent sockets cost the test no goroutine
// each (the goroutine count being measured is this process's).
type slowWatcher struct {
	mu    sync.Mutex
	conns []*slowConn
	open  atomic.Int64
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

func startWatcher() *slowWatcher {
	w := &slowWatcher{stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *slowWatcher) add(c *slowConn) {
	w.mu.Lock()
	w.conns = append(w.conns, c)
	w.mu.Unlock()
	w.open.Add(1)
}

func (w *slowWatcher) run() {
	defer close(w.done)
	buf := make([]byte, 512)
	var local []*slowConn
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		w.mu.Lock()
		local = append(local[:0], w.conns...)
		w.mu.Unlock()
		for _, c := range local {
			if !c.ended.Load() {
				w.poll(c, buf)
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// poll reads whatever c has without blocking. The relay's first byte (a
// close frame) or the end of the stream marks c's end; the stream is read to
// its end and then c answers by closing its socket.
func (w *slowWatcher) poll(c *slowConn, buf []byte) {
	for {
		var n int
		var rerr error
		err := c.raw.Read(func(fd uintptr) bool {
			n, rerr = syscall.Read(int(fd), buf)
			return true // never wait: this is a poll
		})
		if err == nil {
			err = rerr
		}
		now := time.Now()
		switch {
		case err == syscall.EAGAIN:
			return
		case err == syscall.EINTR:
			continue
		case err == nil && n > 0:
			if !c.sawFirst {
				c.sawFirst, c.endAt = true, now
			}
			c.got = append(c.got, buf[:n]...)
			continue
		}
		// EOF (n == 0) or an error: the relay has ended the connection.
		if !c.sawFirst {
			c.endAt = now
		}
		if n == 0 && err == nil {
			err = io.EOF
		}
		c.endErr = err
		_ = c.nc.Close()
		c.ended.Store(true)
		w.open.Add(-1)
		return
	}
}

// end stops the watcher and closes every socket; it may be called again.
func (w *slowWatcher) end() {
	w.once.Do(func() {
		close(w.stop)
		<-w.done
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, c := range w.conns {
			_ = c.nc.Close()
		}
	})
}

// dribbler writes the next byte of every registered head each pace, from one
// goroutine, until each connection ends.
type dribbler struct {
	pace  time.Duration
	mu    sync.Mutex
	conns []*slowConn
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

func startDribbler(pace time.Duration) *dribbler {
	d := &dribbler{pace: pace, stop: make(chan struct{}), done: make(chan struct{})}
	go d.run()
	return d
}

func (d *dribbler) add(c *slowConn) {
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
}

func (d *dribbler) run() {
	defer close(d.done)
	tk := time.NewTicker(d.pace)
	defer tk.Stop()
	var local []*slowConn
	for {
		select {
		case <-d.stop:
			return
		case <-tk.C:
		}
		d.mu.Lock()
		local = append(local[:0], d.conns...)
		d.mu.Unlock()
		for _, c := range local {
			if c.ended.Load() || c.sent >= len(c.head) {
				continue
			}
			if _, err := c.nc.Write(c.head[c.sent : c.sent+1]); err != nil {
				continue // the relay dropped it; the watcher records when
			}
			c.sent++
			c.lastByte = time.Now()
		}
	}
}

func (d *dribbler) end() {
	d.once.Do(func() {
		close(d.stop)
		<-d.done
	})
}

func newSlowConn(kind slowKind, nc net.Conn) (*slowConn, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, errors.New("not a syscall.Conn")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &slowConn{kind: kind, nc: nc, raw: raw}, nil
}

// goroutinesUntil samples runtime.NumGoroutine every 5 ms until five samples
// in a row agree, or until the deadline; then it returns the smallest count
// seen. A goroutine per connection would show in every sample, so the
// minimum over a window in which all of them are connected is what bounds
// the relay's per-connection goroutines.
func goroutinesUntil(deadline time.Time) (least int, settled bool) {
	last, same := -1, 0
	least = runtime.NumGoroutine()
	for time.Now().Before(deadline) {
		n := runtime.NumGoroutine()
		least = min(least, n)
		if n == last {
			if same++; same >= 5 {
				return least, true
			}
		} else {
			last, same = n, 0
		}
		time.Sleep(5 * time.Millisecond)
	}
	return least, false
}

// ---- the tests ------------------------------------------------------------------

// TestSlowlorisClosedAtDeadlines: 1,000 slowloris clients cost the relay no
// goroutines while connected, each is ended within a window around its own
// deadline with the right answer (none for an unfinished request head, 1008
// for an unfinished message), the counters say so, and normal pairs keep
// round-tripping the whole time.
func TestSlowlorisClosedAtDeadlines(t *testing.T) {
	const (
		handshakeTimeout = time.Second
		readTimeout      = time.Second
		tick             = handshakeTimeout / 10 // the wheel's resolution for these deadlines
		halfHeads        = 340
		halfFrames       = 330
		dribblers        = 330
		pace             = 50 * time.Millisecond
		servers          = (halfFrames + 15) / 16 // binaries for the half-frame phones
		workers          = 8
	)
	r := startRelay(t, loop.Config{HandshakeTimeout: handshakeTimeout, MessageReadTimeout: readTimeout})

	// Everything that lives through the test starts first, so it is in both
	// goroutine counts: the normal pairs (each peer has a read loop), their
	// traffic, the watcher and the dribbler.
	pairs := make([]*rtPair, 3)
	for i := range pairs {
		pairs[i] = newRTPair(t, r, fmt.Sprintf("normal-%d", i))
	}
	tr := startTraffic(pairs)
	trEnded := false
	t.Cleanup(func() {
		if !trEnded {
			close(tr.stop)
			<-tr.done
		}
	})
	w := startWatcher()
	t.Cleanup(w.end)
	d := startDribbler(pace)
	t.Cleanup(d.end)

	// Binaries for the half-frame phones: raw, so the close notices they get
	// can be counted at the end.
	bins := make([]*wsclient.Client, servers)
	for k := range bins {
		b, err := syncUpgrade(r.Addr, "/v1/server", fmt.Sprintf("slow-%d", k))
		if err != nil {
			t.Fatal(err)
		}
		bins[k] = b
	}
	closeSyncAtEnd(t, bins)

	// parallel runs f(i) for i in [0, n) on a few workers that have all
	// exited when it returns, and fails the test on the first error.
	parallel := func(n int, f func(i int) error) {
		t.Helper()
		var wg sync.WaitGroup
		var next atomic.Int64
		errs := make(chan error, workers)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
					if err := f(i); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	// The half-frame phones upgrade first: no deadline runs for an idle
	// upgraded connection, so this may take its time.
	phones := make([]*slowConn, halfFrames)
	var phoneMu sync.Mutex
	var phoneSyncs []*wsclient.Client
	parallel(halfFrames, func(i int) error {
		c, err := syncUpgrade(r.Addr, "/v1/client", fmt.Sprintf("slow-%d", i%servers))
		if err != nil {
			return fmt.Errorf("half-frame phone %d: %w", i, err)
		}
		phoneMu.Lock()
		phoneSyncs = append(phoneSyncs, c)
		phoneMu.Unlock()
		if c.Buffered() != 0 {
			return fmt.Errorf("half-frame phone %d: %d unexpected bytes after the 101", i, c.Buffered())
		}
		sc, err := newSlowConn(slowHalfFrame, c.Conn)
		if err != nil {
			return err
		}
		phones[i] = sc
		return nil
	})
	closeSyncAtEnd(t, phoneSyncs)
	waitFor(t, "half-frame phones registered", func() bool { return r.Phones() == len(pairs)+halfFrames })

	tr.pause()
	before := stableGoroutines(t)

	// From here every slowloris deadline runs. Half heads and dribblers
	// connect; the upgraded phones send the first 16 bytes of a frame that
	// promises 100 bytes of payload.
	setupStart := time.Now()
	heads := make([]string, halfHeads)
	for i := range heads {
		heads[i] = upgradeHead("/v1/client", fmt.Sprintf("slow-%d", i%servers), wsclient.NewKey())
	}
	parallel(halfHeads+dribblers+halfFrames, func(i int) error {
		switch {
		case i < halfHeads:
			c, err := syncDial(r.Addr)
			if err != nil {
				return err
			}
			nc := c.Conn
			start := time.Now()
			sc, err := newSlowConn(slowHalfHead, nc)
			if err != nil {
				nc.Close()
				return err
			}
			sc.start = start
			if _, err := io.WriteString(nc, heads[i][:len(heads[i])/2]); err != nil {
				return fmt.Errorf("half head %d: %w", i, err)
			}
			w.add(sc)
		case i < halfHeads+dribblers:
			c, err := syncDial(r.Addr)
			if err != nil {
				return err
			}
			nc := c.Conn
			start := time.Now()
			sc, err := newSlowConn(slowDribble, nc)
			if err != nil {
				nc.Close()
				return err
			}
			sc.start = start
			// Long enough to take seconds at one byte per pace: it never
			// completes before its deadline.
			sc.head = []byte(upgradeHead("/v1/client", "slow-0", wsclient.NewKey()))
			w.add(sc)
			d.add(sc)
		default:
			sc := phones[i-halfHeads-dribblers]
			body := fmt.Sprintf(`{"half":"%s"}`, strings.Repeat("x", 100-len(`{"half":""}`)))
			frame := wsclient.Masked(true, wsclient.OpText, []byte(body))
			sc.start = time.Now()
			if _, err := sc.nc.Write(frame[:6+10]); err != nil {
				return fmt.Errorf("half frame: %w", err)
			}
			w.add(sc)
		}
		return nil
	})
	setupTook := time.Since(setupStart)

	// Count goroutines while all 1,000 are connected: the earliest deadline
	// fires no sooner than a tick before it is due.
	firstDue := setupStart.Add(min(handshakeTimeout, readTimeout) - tick - 50*time.Millisecond)
	after, settled := goroutinesUntil(firstDue)
	measuredBy := time.Since(setupStart)
	if n := r.Counters().Close(loop.CloseHandshakeTimeout) + r.Counters().Close(loop.CloseReadTimeout); n != 0 || int(w.open.Load()) != 1000 {
		t.Fatalf("setting up took %v and counting goroutines until %v: %d slowloris clients were already closed (machine too loaded for %v deadlines)",
			setupTook, measuredBy, 1000-w.open.Load(), handshakeTimeout)
	}
	tr.resume()
	t.Logf("goroutines: %d before, %d with 1,000 slowloris clients connected (diff %d, settled %v); setup took %v, counted by %v",
		before, after, after-before, settled, setupTook, measuredBy)
	if after-before > 20 {
		t.Fatalf("goroutines grew by %d for 1,000 slowloris clients (from %d to %d)", after-before, before, after)
	}

	// Every slowloris client is ended.
	deadline := time.Now().Add(testTimeout)
	for w.open.Load() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d slowloris clients still open %v after setup; relay: %s", w.open.Load(), time.Since(setupStart), counterSummary(r))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Traffic runs on past the last close, then stops.
	doneAt := tr.count()
	waitFor(t, "round trips after the last close", func() bool {
		select {
		case <-tr.done:
			return true // failed: end reports why
		default:
			return tr.count() >= doneAt+3
		}
	})
	tr.end(t)
	trEnded = true
	d.end()
	w.end()

	// Each ended within its window, with the right answer. A deadline may
	// fire up to one wheel tick early; startSlack covers the relay starting
	// a handshake deadline at accept, which can precede the client goroutine
	// noting its start (a 1,000-client -race run measured 899 ms of 1 s).
	const startSlack = 25 * time.Millisecond
	windows := map[slowKind][2]time.Duration{
		slowHalfHead:  {handshakeTimeout - tick - startSlack, handshakeTimeout + 750*time.Millisecond},
		slowDribble:   {handshakeTimeout - tick - startSlack, handshakeTimeout + 750*time.Millisecond},
		slowHalfFrame: {readTimeout - tick - startSlack, readTimeout + 750*time.Millisecond},
	}
	closeFrame := append([]byte{0x88, byte(2 + len("message read timeout")), 1008 >> 8, 1008 & 0xff}, "message read timeout"...)
	type spread struct{ lo, hi time.Duration }
	seen := map[slowKind]*spread{}
	var firstEnd, lastEnd time.Time
	w.mu.Lock()
	all := slices.Clone(w.conns)
	w.mu.Unlock()
	if len(all) != 1000 {
		t.Fatalf("%d slowloris clients watched, want 1000", len(all))
	}
	minSent := math.MaxInt
	for _, c := range all {
		took := c.endAt.Sub(c.start)
		win := windows[c.kind]
		if took < win[0] || took > win[1] {
			t.Errorf("%s ended %v after its deadline started, want within [%v, %v]", c.kind, took, win[0], win[1])
		}
		s := seen[c.kind]
		if s == nil {
			s = &spread{took, took}
			seen[c.kind] = s
		}
		s.lo, s.hi = min(s.lo, took), max(s.hi, took)
		if firstEnd.IsZero() || c.endAt.Before(firstEnd) {
			firstEnd = c.endAt
		}
		if c.endAt.After(lastEnd) {
			lastEnd = c.endAt
		}
		switch c.kind {
		case slowHalfHead, slowDribble:
			if len(c.got) != 0 {
				t.Errorf("%s got an answer %q: want the connection dropped without one", c.kind, c.got)
			}
		case slowHalfFrame:
			if string(c.got) != string(closeFrame) || c.endErr != io.EOF {
				t.Errorf("half-frame phone got %q then %v, want close frame %q then EOF", c.got, c.endErr, closeFrame)
			}
		}
		if c.kind == slowDribble {
			minSent = min(minSent, c.sent)
			// Still dribbling right up to the end: a deadline counted from
			// the last byte would not have fired yet.
			if gap := c.endAt.Sub(c.lastByte); c.sent == 0 || gap > handshakeTimeout/2 {
				t.Errorf("dribbler sent %d bytes, the last %v before it was dropped", c.sent, gap)
			}
			if c.sent >= len(c.head) {
				t.Errorf("dribbler sent its whole head (%d bytes) before its deadline", c.sent)
			}
		}
	}
	for k := slowHalfHead; k <= slowDribble; k++ {
		t.Logf("%s: ended %v .. %v after connect/first byte (deadline %v, wheel tick %v)", k, seen[k].lo, seen[k].hi,
			map[slowKind]time.Duration{slowHalfHead: handshakeTimeout, slowHalfFrame: readTimeout, slowDribble: handshakeTimeout}[k], tick)
	}
	t.Logf("dribblers sent at least %d bytes each (one per %v) before being dropped", minSent, pace)
	if minSent < 5 {
		t.Errorf("a dribbler sent only %d bytes before its deadline: it was not dribbling", minSent)
	}

	c := r.Counters()
	if got := c.Close(loop.CloseHandshakeTimeout); got != halfHeads+dribblers {
		t.Errorf("handshake_timeout closes %d, want %d", got, halfHeads+dribblers)
	}
	if got := c.Close(loop.CloseReadTimeout); got != halfFrames {
		t.Errorf("read_timeout closes %d, want %d", got, halfFrames)
	}

	// Each half-frame phone's binary hears it left (1001: no close frame
	// from the phone), and nothing else.
	notices := 0
	for k, b := range bins {
		for n := (halfFrames - k + servers - 1) / servers; n > 0; n-- {
			env, err := readText(b)
			if err != nil {
				t.Fatalf("binary slow-%d reading notices: %v", k, err)
			}
			if !strings.HasPrefix(string(env), `{"conn_id":"client-slow-`) || !strings.HasSuffix(string(env), `","close_code":1001}`) {
				t.Fatalf("binary slow-%d got %s, want a close notice 1001", k, env)
			}
			notices++
		}
	}
	if notices != halfFrames {
		t.Fatalf("%d close notices, want %d", notices, halfFrames)
	}

	// The normal pairs kept going before, during and after the closes.
	lat := slices.Sorted(slices.Values(tr.lat))
	during := tr.between(firstEnd, lastEnd)
	t.Logf("normal pairs: %d round trips, %d of them while slowloris clients were being closed (%v .. %v after setup); p50 %v p99 %v max %v",
		len(tr.finished), during, firstEnd.Sub(setupStart), lastEnd.Sub(setupStart), percentile(lat, .5), percentile(lat, .99), lat[len(lat)-1])
	if tr.between(time.Time{}, firstEnd) == 0 || tr.between(lastEnd, time.Now()) == 0 {
		t.Fatalf("normal pairs did not round-trip both before the first close and after the last")
	}
	if lat[len(lat)-1] > time.Second {
		t.Fatalf("a normal round trip took %v", lat[len(lat)-1])
	}
	waitFor(t, "slowloris connections gone", func() bool {
		return r.Live() == 2*len(pairs)+servers && r.Phones() == len(pairs) && c.StagedBytes.Load() == 0
	})
	for i, pr := range pairs {
		pr.roundTrip(t, 1_000_000+i)
	}
}

// TestSilentBinaryDoesNotHurtOthers: a binary that stops answering pings is
// closed 1011 `heartbeat timeout` after about interval + timeout. Its slot
// then enters the grace window: its phones are told nothing until the
// window ends, then closed 1000. Another server-id's pair keeps working
// throughout.
func TestSilentBinaryDoesNotHurtOthers(t *testing.T) {
	const (
		interval = 100 * time.Millisecond
		timeout  = 150 * time.Millisecond
		grace    = 400 * time.Millisecond
		tick     = interval / 10 // the wheel's resolution: a tenth of the shortest deadline
	)
	r := startRelay(t, loop.Config{HeartbeatInterval: interval, PongTimeout: timeout, GracePeriod: grace})
	other := newRTPair(t, r, "lively")
	tr := startTraffic([]*rtPair{other})
	trEnded := false
	t.Cleanup(func() {
		if !trEnded {
			close(tr.stop)
			<-tr.done
		}
	})

	start := time.Now()
	silent := silentPeer(t, r.Addr, "/v1/server", binaryHeaders("quiet"))
	ps := []*peer{r.phone(t, "quiet"), r.phone(t, "quiet")} // these answer pings

	// The binary: 1011 after its first ping (last quarter of the interval)
	// goes unanswered for timeout; the wheel may fire a tick early.
	silent.expectClose(t, 1011, "heartbeat timeout")
	binaryClosed := time.Now()
	if took, lo, hi := binaryClosed.Sub(start), interval*3/4+timeout-tick, interval+timeout+time.Second; took < lo || took > hi {
		t.Fatalf("silent binary closed after %v, want within [%v, %v]", took, lo, hi)
	}
	// gorilla answered the close frame, so the relay ends the connection
	// now and the grace window starts.
	waitFor(t, "binary in grace", func() bool { return r.Binaries() == 1 && r.Live() == 4 })
	if r.Phones() != 3 {
		t.Fatalf("%d phones during grace, want 3", r.Phones())
	}

	// Its phones hear nothing (they keep answering pings) until grace ends,
	// then a close 1000 with no reason.
	for i, p := range ps {
		select {
		case ev := <-p.events:
			took := time.Since(binaryClosed)
			var ce *websocket.CloseError
			if !errors.As(ev.err, &ce) || ce.Code != 1000 || ce.Text != "" {
				t.Fatalf("phone %d: first event %q %v, want a close 1000 at the end of grace", i, ev.data, ev.err)
			}
			if lo, hi := grace-tick, grace+time.Second; took < lo || took > hi {
				t.Fatalf("phone %d closed %v after its binary, want within [%v, %v]", i, took, lo, hi)
			}
			t.Logf("phone %d closed 1000 %v after its binary's 1011 (grace %v)", i, took, grace)
		case <-time.After(testTimeout):
			t.Fatalf("phone %d not closed after grace", i)
		}
	}
	t.Logf("silent binary closed 1011 %v after connecting (interval %v, timeout %v)", binaryClosed.Sub(start), interval, timeout)
	waitFor(t, "slot dropped", func() bool { return r.Phones() == 1 && r.Live() == 2 })

	tr.end(t)
	trEnded = true
	if len(tr.finished) == 0 {
		t.Fatal("the other pair never round-tripped")
	}
	if during := tr.between(start, time.Now()); during < 10 {
		t.Fatalf("the other pair round-tripped only %d times meanwhile", during)
	}
	other.roundTrip(t, 1)

	c := r.Counters()
	for _, x := range []struct {
		name      string
		got, want uint64
	}{
		{"heartbeat closes", c.Close(loop.CloseHeartbeat), 1},
		{"grace expiries", c.GraceExpiries.Load(), 1},
		{"grace_expired closes", c.Close(loop.CloseGraceExpired), 2},
		{"taken_over closes", c.Close(loop.CloseTakenOver), 0},
		{"reclaimed closes", c.Close(loop.CloseReclaimed), 0},
	} {
		if x.got != x.want {
			t.Errorf("%s = %d, want %d", x.name, x.got, x.want)
		}
	}
	t.Logf("other pair: %d round trips while the binary went silent and its slot expired", len(tr.finished))
}
