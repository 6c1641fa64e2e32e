package loop_test

// Event-loop discipline over real loopback sockets: idle and slow
// connections cost the relay no goroutines, a slow peer never stalls
// anyone else, and the budgets that bound memory hold under floods.
//
// The goroutine tests count runtime.NumGoroutine() in this process, which
// includes the test's own clients, so their clients are raw wsclient ones:
// plain sockets driven synchronously, with no goroutine per connection.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"switchboard/internal/wsclient"
	"switchboard/loop"
)

// ---- synchronous raw clients with no goroutine of their own ----------------

// syncSources spreads client sockets over several source addresses so
// thousands of connections (plus TIME_WAIT from earlier runs) cannot exhaust
// one address's ephemeral ports.
var syncSources wsclient.Spread

// syncDial connects with a small reader: thousands of these stay open.
func syncDial(addr string) (*wsclient.Client, error) {
	return wsclient.DialTCP(addr, wsclient.Options{Timeout: testTimeout, Local: syncSources.Next(), ReadBufferSize: 512})
}

// upgradeHead is the upgrade request a client of this role sends, for tests
// that send it in pieces.
func upgradeHead(path, serverID, key string) string {
	return string(wsclient.Head(path, "relay.test", append(wsclient.UpgradeLines(key), rawLines(path, serverID)...)...))
}

// syncUpgrade dials addr, upgrades on path for serverID and checks the 101.
// It reports errors rather than failing the test so worker goroutines can
// use it.
func syncUpgrade(addr, path, serverID string) (*wsclient.Client, error) {
	c, err := syncDial(addr)
	if err != nil {
		return nil, err
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := c.Upgrade(wsclient.Request{Path: path, Host: "relay.test", Lines: rawLines(path, serverID)}); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.Conn.SetReadDeadline(time.Time{})
	return c, nil
}

// readUpgrade reads the answer to an upgrade sent in pieces and checks it
// is a valid 101 for key.
func readUpgrade(c *wsclient.Client, key string) error {
	_ = c.Conn.SetReadDeadline(time.Now().Add(testTimeout))
	defer c.Conn.SetReadDeadline(time.Time{})
	_, err := c.ReadUpgrade(key)
	return err
}

// readText reads one server frame within the test timeout and requires an
// unmasked, unfragmented text frame. The payload is the caller's.
func readText(c *wsclient.Client) ([]byte, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(testTimeout))
	defer c.Conn.SetReadDeadline(time.Time{})
	f, err := c.NextFrame()
	switch {
	case err != nil:
		return nil, err
	case f.Masked:
		return nil, errors.New("server frame is masked")
	case !f.Fin:
		return nil, errors.New("server sent a fragmented frame")
	case f.Op != wsclient.OpText:
		return nil, fmt.Errorf("expected a text frame, got opcode %d (%q)", f.Op, f.Payload)
	}
	return bytes.Clone(f.Payload), nil
}

// envelopeConnID returns the conn_id at the start of a relay envelope.
func envelopeConnID(env []byte) (string, error) {
	const head = `{"conn_id":"`
	s := string(env)
	if !strings.HasPrefix(s, head) {
		return "", fmt.Errorf("not an envelope: %s", s)
	}
	end := strings.IndexByte(s[len(head):], '"')
	if end < 0 {
		return "", fmt.Errorf("not an envelope: %s", s)
	}
	return s[len(head) : len(head)+end], nil
}

// syncGroup dials one raw binary and phones raw phones of serverID; every
// phone sends one frame and the binary must receive all of them, so each
// connection has carried traffic before it goes idle.
func syncGroup(addr, serverID string, phones int) ([]*wsclient.Client, error) {
	b, err := syncUpgrade(addr, "/v1/server", serverID)
	if err != nil {
		return nil, fmt.Errorf("binary %s: %w", serverID, err)
	}
	all := []*wsclient.Client{b}
	fail := func(err error) ([]*wsclient.Client, error) {
		for _, c := range all {
			c.Close()
		}
		return nil, err
	}
	for i := range phones {
		p, err := syncUpgrade(addr, "/v1/client", serverID)
		if err != nil {
			return fail(fmt.Errorf("phone %d of %s: %w", i, serverID, err))
		}
		all = append(all, p)
		if err := p.WriteText(fmt.Appendf(nil, `{"phone":%d}`, i)); err != nil {
			return fail(err)
		}
	}
	seen := make(map[string]bool, phones)
	for range phones {
		env, err := readText(b)
		if err != nil {
			return fail(fmt.Errorf("binary %s reading envelopes: %w", serverID, err))
		}
		id, err := envelopeConnID(env)
		if err != nil {
			return fail(err)
		}
		seen[id] = true
	}
	if len(seen) != phones {
		return fail(fmt.Errorf("binary %s saw %d distinct phones, want %d", serverID, len(seen), phones))
	}
	return all, nil
}

// syncGroups opens groups of one binary and phonesEach phones with a few
// workers that have all exited when it returns. Every connection is closed
// at the end of the test.
func syncGroups(t *testing.T, addr, prefix string, groups, phonesEach int) []*wsclient.Client {
	t.Helper()
	const workers = 8
	var (
		mu    sync.Mutex
		conns []*wsclient.Client
		errs  []error
		next  atomic.Int64
		wg    sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				g := int(next.Add(1)) - 1
				if g >= groups {
					return
				}
				cs, err := syncGroup(addr, fmt.Sprintf("%s-%d", prefix, g), phonesEach)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				conns = append(conns, cs...)
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	closeSyncAtEnd(t, conns)
	if len(errs) > 0 {
		t.Fatalf("opening %s connections: %v (and %d more errors)", prefix, errs[0], len(errs)-1)
	}
	return conns
}

func closeSyncAtEnd(t *testing.T, conns []*wsclient.Client) {
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
}

// stableGoroutines polls runtime.NumGoroutine until it returns the same value
// for several consecutive samples: transient writer tasks, read tasks and
// timer callbacks have finished.
func stableGoroutines(t *testing.T) int {
	t.Helper()
	const want = 10
	deadline := time.Now().Add(testTimeout)
	last, same := -1, 0
	for {
		n := runtime.NumGoroutine()
		if n == last {
			same++
			if same >= want {
				return n
			}
		} else {
			last, same = n, 0
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutine count never settled (last %d)", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLong is waitFor with its own deadline, for floods whose pace depends on
// the machine's load; on timeout it reports the relay's counters.
func waitLong(t *testing.T, r *relay, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; relay: %s", d, what, counterSummary(r))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// counterSummary lists the relay's non-zero counters, for failure messages.
func counterSummary(r *relay) string {
	c := r.Counters()
	var b strings.Builder
	fmt.Fprintf(&b, "live=%d phones=%d binaries=%d phone_to_binary=%d binary_to_phone=%d queued=%d staged=%d",
		r.Live(), r.Phones(), r.Binaries(), c.PhoneToBinary.Load(), c.BinaryToPhone.Load(),
		c.OutboxBytesQueued.Load(), c.StagedBytes.Load())
	for i := range c.Drops {
		if n := c.Drops[i].Load(); n > 0 {
			fmt.Fprintf(&b, " drop[%s]=%d", loop.DropReason(i), n)
		}
	}
	for i := range c.Closes {
		if n := c.Closes[i].Load(); n > 0 {
			fmt.Fprintf(&b, " close[%s]=%d", loop.CloseReason(i), n)
		}
	}
	return b.String()
}

// ---- gorilla pairs for latency probes ---------------------------------------

// rtPair is a binary and one phone of a server-id, both gorilla peers with
// read loops, used to prove routing keeps flowing.
type rtPair struct {
	binary, phone *peer
	connID        string
}

func newRTPair(t *testing.T, r *relay, serverID string) *rtPair {
	t.Helper()
	b := r.binary(t, serverID)
	p := r.phone(t, serverID)
	return &rtPair{binary: b, phone: p, connID: connIDOf(t, p, b)}
}

// roundTrip sends one frame phone → binary → phone and returns its latency.
func (pr *rtPair) roundTrip(t *testing.T, seq int) time.Duration {
	t.Helper()
	start := time.Now()
	pr.phone.send(t, fmt.Sprintf(`{"seq":%d}`, seq))
	want := fmt.Sprintf(`{"conn_id":%q,"frame":{"seq":%d}}`, pr.connID, seq)
	if got := string(pr.binary.next(t)); got != want {
		t.Fatalf("binary got %s, want %s", got, want)
	}
	pr.binary.send(t, fmt.Sprintf(`{"conn_id":%q,"frame":{"echo":%d}}`, pr.connID, seq))
	if got, want := string(pr.phone.next(t)), fmt.Sprintf(`{"echo":%d}`, seq); got != want {
		t.Fatalf("phone got %s, want %s", got, want)
	}
	return time.Since(start)
}

// roundTrips runs n round trips spread over pairs and returns the sorted
// latencies.
func roundTrips(t *testing.T, pairs []*rtPair, n int) []time.Duration {
	t.Helper()
	lat := make([]time.Duration, n)
	for i := range n {
		lat[i] = pairs[i%len(pairs)].roundTrip(t, i)
	}
	slices.Sort(lat)
	return lat
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	return sorted[int(float64(len(sorted)-1)*p)]
}

// ---- the tests ---------------------------------------------------------------

func TestGoroutinesFlatWithIdleConnections(t *testing.T) {
	r := startRelay(t, loop.Config{})

	// 100 idle connections: 10 binaries with 9 phones each.
	syncGroups(t, r.Addr, "idle-a", 10, 9)
	waitFor(t, "first 100 registered", func() bool { return r.Live() == 100 })
	before := stableGoroutines(t)

	// 4,000 more: 250 binaries with 15 phones each, every phone having sent
	// one frame its binary received.
	syncGroups(t, r.Addr, "idle-b", 250, 15)
	waitFor(t, "4,100 registered", func() bool { return r.Live() == 4100 })
	if got := r.Phones(); got != 10*9+250*15 {
		t.Fatalf("%d phones registered, want %d", got, 10*9+250*15)
	}
	after := stableGoroutines(t)

	t.Logf("goroutines: %d with 100 idle connections, %d with 4,100 (diff %d)", before, after, after-before)
	if after-before > 20 {
		t.Fatalf("goroutines grew by %d for 4,000 idle connections (from %d to %d)", after-before, before, after)
	}
	if n := r.Counters().OutboxBytesQueued.Load(); n != 0 {
		t.Fatalf("idle relay has %d bytes queued", n)
	}
	if n := r.Counters().StagedBytes.Load(); n != 0 {
		t.Fatalf("idle relay has %d bytes staged", n)
	}
}

func TestSlowlorisClientsDoNotHurtOthers(t *testing.T) {
	r := startRelay(t, loop.Config{})

	pairs := make([]*rtPair, 4)
	for i := range pairs {
		pairs[i] = newRTPair(t, r, fmt.Sprintf("norm-%d", i))
	}
	baseline := roundTrips(t, pairs, 200)
	before := stableGoroutines(t)

	// The slow clients' server-ids: 50 raw binaries, 10 slow phones each.
	const servers, halfFrames, halfHeads = 50, 500, 500
	bins := make([]*wsclient.Client, servers) // bins[k] holds slow-k
	for k := range bins {
		b, err := syncUpgrade(r.Addr, "/v1/server", fmt.Sprintf("slow-%d", k))
		if err != nil {
			t.Fatal(err)
		}
		bins[k] = b
	}
	closeSyncAtEnd(t, bins)

	var mu sync.Mutex
	var slow []*wsclient.Client // every slow client, closed at the end
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range slow {
			c.Close()
		}
	})
	add := func(c *wsclient.Client) {
		mu.Lock()
		slow = append(slow, c)
		mu.Unlock()
	}

	// 500 phones that complete the upgrade, then send the header of a frame
	// promising 100 bytes of payload and only 10 of them.
	full := make([][]byte, halfFrames)
	halfFrameConns := make([]*wsclient.Client, halfFrames)
	var staged int64
	for i := range halfFrames {
		body := fmt.Sprintf(`{"n":%d,"pad":"`, i)
		body += strings.Repeat("x", 100-len(body)-2) + `"}`
		full[i] = wsclient.Masked(true, wsclient.OpText, []byte(body))
		staged += int64(len(full[i]) - 90) // header (6 bytes) + 10 payload bytes
	}
	// 500 connections that stop halfway through their request head.
	heads := make([]string, halfHeads)
	for i := range heads {
		heads[i] = upgradeHead("/v1/client", fmt.Sprintf("slow-%d", i%servers), wsclient.NewKey())
		staged += int64(len(heads[i]) / 2)
	}
	headConns := make([]*wsclient.Client, halfHeads)

	var wg sync.WaitGroup
	var errCount atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		if errCount.Add(1) == 1 {
			firstErr.Store(err)
		}
	}
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < halfFrames; i += 8 {
				c, err := syncUpgrade(r.Addr, "/v1/client", fmt.Sprintf("slow-%d", i%servers))
				if err != nil {
					fail(err)
					continue
				}
				add(c)
				if _, err := c.Conn.Write(full[i][:len(full[i])-90]); err != nil {
					fail(err)
				}
				halfFrameConns[i] = c
			}
			for i := w; i < halfHeads; i += 8 {
				c, err := syncDial(r.Addr)
				if err != nil {
					fail(err)
					continue
				}
				add(c)
				if _, err := io.WriteString(c.Conn, heads[i][:len(heads[i])/2]); err != nil {
					fail(err)
				}
				headConns[i] = c
			}
		}()
	}
	wg.Wait()
	if n := errCount.Load(); n > 0 {
		t.Fatalf("%d slow clients failed: %v", n, firstErr.Load())
	}
	waitFor(t, "half frames and heads staged", func() bool { return r.Counters().StagedBytes.Load() == staged })
	if got := r.Phones(); got != 4+halfFrames {
		t.Fatalf("%d phones registered, want %d", got, 4+halfFrames)
	}

	after := stableGoroutines(t)
	t.Logf("goroutines: %d before, %d with %d slow clients and %d more binaries (diff %d); staged %d bytes",
		before, after, halfFrames+halfHeads, servers, after-before, staged)
	if after-before > 20 {
		t.Fatalf("goroutines grew by %d for 1,000 slow clients (from %d to %d)", after-before, before, after)
	}

	during := roundTrips(t, pairs, 200)
	t.Logf("round trips: before p50 %v p99 %v; during p50 %v p99 %v",
		percentile(baseline, .5), percentile(baseline, .99), percentile(during, .5), percentile(during, .99))
	if p99 := percentile(during, .99); p99 > 200*time.Millisecond {
		t.Fatalf("round-trip p99 %v with slow clients connected (baseline p50 %v)", p99, percentile(baseline, .5))
	}
	if got := r.Counters().StagedBytes.Load(); got != staged {
		t.Fatalf("staged bytes %d after normal traffic, want %d", got, staged)
	}

	// The partial frames complete correctly when the rest arrives, even much
	// later and in two writes.
	for i := range 5 {
		c := halfFrameConns[i]
		rest := full[i][len(full[i])-90:]
		if _, err := c.Conn.Write(rest[:40]); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Conn.Write(rest[40:]); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		payload := make([]byte, 100)
		copy(payload, full[i][6:])
		mask := full[i][2:6]
		for j := range payload {
			payload[j] ^= mask[j&3]
		}
		env, err := readText(bins[i%servers])
		if err != nil {
			t.Fatalf("binary of completed frame %d: %v", i, err)
		}
		if !strings.HasSuffix(string(env), `","frame":`+string(payload)+`}`) {
			t.Fatalf("binary got %s, want frame %s", env, payload)
		}
	}
	staged -= 5 * 16
	waitFor(t, "completed frames unstaged", func() bool { return r.Counters().StagedBytes.Load() == staged })

	// The half heads complete into working phones too.
	for i := range 3 {
		c := headConns[i]
		if _, err := io.WriteString(c.Conn, heads[i][len(heads[i])/2:]); err != nil {
			t.Fatal(err)
		}
		key := heads[i][strings.Index(heads[i], "Sec-WebSocket-Key: ")+len("Sec-WebSocket-Key: "):]
		key = key[:strings.Index(key, "\r\n")]
		if err := readUpgrade(c, key); err != nil {
			t.Fatalf("completed head %d: %v", i, err)
		}
		if err := c.WriteText(fmt.Appendf(nil, `{"late":%d}`, i)); err != nil {
			t.Fatal(err)
		}
		env, err := readText(bins[i%servers])
		if err != nil {
			t.Fatalf("binary of completed head %d: %v", i, err)
		}
		if want := fmt.Sprintf(`,"frame":{"late":%d}}`, i); !strings.HasSuffix(string(env), want) {
			t.Fatalf("binary got %s, want frame %s", env, want)
		}
		staged -= int64(len(heads[i]) / 2)
	}
	waitFor(t, "completed heads unstaged", func() bool { return r.Counters().StagedBytes.Load() == staged })
	if got := r.Counters().Drop(loop.DropBinaryGone) + r.Counters().Close(loop.CloseProtocol); got != 0 {
		t.Fatalf("unexpected drops/protocol closes: %d", got)
	}
}

func TestSlowPhoneDoesNotStallBinary(t *testing.T) {
	r := startRelay(t, loop.Config{
		MaxMessageBytes:  64 << 10,
		PhoneOutboxBytes: 256 << 10,
		WriteTimeout:     500 * time.Millisecond,
		CloseLinger:      500 * time.Millisecond,
	})
	b := r.binary(t, "flood")
	fast := r.phone(t, "flood")
	fastID := connIDOf(t, fast, b)

	slow, err := syncUpgrade(r.Addr, "/v1/client", "flood")
	if err != nil {
		t.Fatal(err)
	}
	closeSyncAtEnd(t, []*wsclient.Client{slow})
	if err := slow.WriteText([]byte(`{"slow":true}`)); err != nil {
		t.Fatal(err)
	}
	slowID, err := envelopeConnID(b.next(t))
	if err != nil {
		t.Fatal(err)
	}
	// From here the slow phone never reads its socket.

	// The fast phone's frames are collected as they come, so it keeps reading.
	var (
		fmu     sync.Mutex
		fastGot []string
		fastErr error
	)
	go func() {
		for ev := range fast.events {
			fmu.Lock()
			if ev.err != nil {
				fastErr = ev.err
			} else {
				fastGot = append(fastGot, string(ev.data))
			}
			fmu.Unlock()
		}
	}()

	filler := strings.Repeat("s", 8<<10)
	slowFrame := fmt.Sprintf(`{"conn_id":%q,"frame":"%s"}`, slowID, filler)
	fastN := 0
	sendFast := func() {
		b.send(t, fmt.Sprintf(`{"conn_id":%q,"frame":{"seq":%d}}`, fastID, fastN))
		fastN++
	}
	overflowAt := -1
	for i := 0; i < 8192; i++ { // at most 64 MiB towards the slow phone
		b.send(t, slowFrame)
		if i%4 == 0 {
			sendFast()
		}
		if overflowAt < 0 && r.Counters().Drop(loop.DropPhoneBacklog) > 0 {
			overflowAt = i
		}
		if overflowAt >= 0 && i >= overflowAt+200 {
			break
		}
	}
	if overflowAt < 0 {
		t.Fatalf("64 MiB towards a phone that never reads did not overflow its %d-byte budget; relay: %s", r.Config().PhoneOutboxBytes, counterSummary(r))
	}
	for range 50 {
		sendFast()
	}

	// The binary learns the slow phone is gone; nothing else reaches it.
	want := fmt.Sprintf(`{"conn_id":%q,"close_code":1001}`, slowID)
	if got := string(b.next(t)); got != want {
		t.Fatalf("binary got %s, want %s", got, want)
	}

	waitFor(t, "every fast frame", func() bool {
		fmu.Lock()
		defer fmu.Unlock()
		return len(fastGot) >= fastN || fastErr != nil
	})
	fmu.Lock()
	got, ferr := slices.Clone(fastGot), fastErr
	fmu.Unlock()
	if ferr != nil {
		t.Fatalf("fast phone ended after %d of %d frames: %v", len(got), fastN, ferr)
	}
	if len(got) != fastN {
		t.Fatalf("fast phone got %d frames, want %d", len(got), fastN)
	}
	for i, g := range got {
		if want := fmt.Sprintf(`{"seq":%d}`, i); g != want {
			t.Fatalf("fast phone frame %d is %s, want %s", i, g, want)
		}
	}
	t.Logf("slow phone overflowed after %d frames of 8 KiB; fast phone got all %d frames in order", overflowAt+1, fastN)

	c := r.Counters()
	if c.Drop(loop.DropPhoneBacklog) == 0 {
		t.Fatal("no phone_backlog_full drop counted")
	}
	if got := c.Close(loop.ClosePhoneBacklog); got != 1 {
		t.Fatalf("%d phone_backlog_full closes, want 1", got)
	}
	waitFor(t, "slow phone gone", func() bool { return r.Phones() == 1 && r.Live() == 2 })
	waitFor(t, "slow phone's queue freed", func() bool { return c.OutboxBytesQueued.Load() == 0 })

	// The binary and the fast phone are still fine.
	b.send(t, fmt.Sprintf(`{"conn_id":%q,"frame":"still here"}`, fastID))
	waitFor(t, "fast phone still served", func() bool {
		fmu.Lock()
		defer fmu.Unlock()
		return len(fastGot) == fastN+1 && fastGot[fastN] == `"still here"`
	})
}

// A binary that stops reading while its 16 phones flood it: the phones are
// slowed, not closed. Each one whose frame leaves the binary's outbox more
// than half full stops reading (congestion.go), so the outbox stays within
// its budget, nothing is dropped, other server-ids keep their round trips,
// and once the binary goes its phones are let go.
func TestSlowBinaryBoundsMemory(t *testing.T) {
	const budget = 1 << 20
	r := startRelay(t, loop.Config{
		BinaryOutboxBytes: budget,
		// Long enough that the stuck binary is not dropped for a write
		// timeout while its phones wait.
		WriteTimeout: 30 * time.Second,
	})
	others := []*rtPair{newRTPair(t, r, "other-0"), newRTPair(t, r, "other-1")}

	slowBin, err := syncUpgrade(r.Addr, "/v1/server", "stuck")
	if err != nil {
		t.Fatal(err)
	}
	// From here the binary never reads its socket.

	const phones = 16
	ps := make([]*peer, phones)
	for i := range ps {
		ps[i] = r.phone(t, "stuck")
	}

	// Sample the relay's queued and staged bytes throughout.
	var maxQueued, maxStaged atomic.Int64
	sampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			c := r.Counters()
			maxQueued.Store(max(maxQueued.Load(), c.OutboxBytesQueued.Load()))
			maxStaged.Store(max(maxStaged.Load(), c.StagedBytes.Load()+c.UnreadBytes.Load()))
			select {
			case <-sampling:
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
	}()

	var stop atomic.Bool
	var wg sync.WaitGroup
	frame := []byte(fmt.Sprintf(`{"flood":"%s"}`, strings.Repeat("f", 4<<10)))
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The relay stops reading: writes block once TCP's buffers are
			// full, so a deadline ends the flood.
			_ = p.conn.SetWriteDeadline(time.Now().Add(testTimeout))
			for i := 0; i < 100000 && !stop.Load(); i++ {
				if p.conn.WriteMessage(websocket.TextMessage, frame) != nil {
					return
				}
			}
		}()
	}

	// Every flooding phone ends up paused: read only as its binary drains.
	waitLong(t, r, 30*time.Second, "every flooding phone paused", func() bool {
		return r.Counters().PausedNow.Load() >= phones && r.Counters().Parks.Load() > 0
	})
	lat := roundTrips(t, others, 50)
	close(sampling)
	<-sampled
	slices.Sort(lat)

	c := r.Counters()
	limit := int64(budget + 128<<10) // budget + close-notice slack + the other pairs' traffic
	t.Logf("max outbox bytes %d (budget %d), max inbound %d; parks %d; other pairs' round trips p50 %v p99 %v",
		maxQueued.Load(), budget, maxStaged.Load(), c.Parks.Load(), percentile(lat, .5), percentile(lat, .99))
	if maxQueued.Load() > limit {
		t.Fatalf("outboxes held %d bytes, budget %d", maxQueued.Load(), budget)
	}
	if n := c.Close(loop.CloseBinaryBacklog) + c.Drop(loop.DropBinaryBacklog); n != 0 {
		t.Fatalf("%d binary_backlog_full closes and drops: the phones should have been slowed", n)
	}
	if got := c.Close(loop.CloseWriteFailed); got != 0 {
		t.Fatalf("%d write failures", got)
	}
	if got := r.Phones(); got != phones+2 {
		t.Fatalf("%d phones attached, want all %d", got, phones+2)
	}

	// The stuck binary goes: its phones read again, find no binary and are
	// closed (1000), as for any phone sending into a gone binary's slot.
	stop.Store(true)
	_ = slowBin.Close()
	for _, p := range ps {
		if code, _ := p.closed(t); code != 1000 {
			t.Fatalf("phone closed with %d after its binary left, want 1000", code)
		}
	}
	wg.Wait()
	waitFor(t, "flooding phones' input released", func() bool {
		return c.PausedNow.Load() == 0 && c.StagedBytes.Load() == 0 && c.OutboxBytesQueued.Load() == 0
	})
}

func TestBurstToOnePhoneInOrder(t *testing.T) {
	r := startRelay(t, loop.Config{})
	b, err := syncUpgrade(r.Addr, "/v1/server", "burst")
	if err != nil {
		t.Fatal(err)
	}
	closeSyncAtEnd(t, []*wsclient.Client{b})
	p := r.phone(t, "burst")
	p.send(t, `{"hi":1}`)
	env, err := readText(b)
	if err != nil {
		t.Fatal(err)
	}
	id, err := envelopeConnID(env)
	if err != nil {
		t.Fatal(err)
	}

	// 500 envelopes in one write: the relay sees them in as few reads as the
	// kernel delivers and must route each, in order.
	const n = 500
	var burst []byte
	for i := range n {
		burst = append(burst, wsclient.Masked(true, wsclient.OpText, fmt.Appendf(nil, `{"conn_id":%q,"frame":{"i":%d}}`, id, i))...)
	}
	if _, err := b.Conn.Write(burst); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if got, want := p.next(t), fmt.Appendf(nil, `{"i":%d}`, i); !bytes.Equal(got, want) {
			t.Fatalf("frame %d: got %s, want %s", i, got, want)
		}
	}
	if got := r.Counters().BinaryToPhone.Load(); got != n {
		t.Fatalf("BinaryToPhone %d, want %d", got, n)
	}
	if got := r.Counters().Drop(loop.DropPhoneBacklog) + r.Counters().Drop(loop.DropPhoneClosing); got != 0 {
		t.Fatalf("%d frames dropped", got)
	}
}
