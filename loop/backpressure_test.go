package loop_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"switchboard/internal/wsclient"
	"switchboard/loop"
)

// inboundPeaks is what inputGauge saw of the relay's inbound buffers
// (netpoll's unread input plus staged and reassembled input): the peak over
// the whole run, and the peak once the first pause's backlog was parsed
// (from the first sample with a pause counted and the total within bound).
type inboundPeaks struct{ all, settled int64 }

// inputGauge samples the relay's inbound buffers every millisecond until
// stop.
func inputGauge(r *relay, bound int64, stop <-chan struct{}) <-chan inboundPeaks {
	out := make(chan inboundPeaks, 1)
	go func() {
		var p inboundPeaks
		settled := false
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			c := r.Counters()
			n := c.UnreadBytes.Load() + c.StagedBytes.Load()
			p.all = max(p.all, n)
			if !settled && n <= bound && c.PausedNow.Load() > 0 {
				settled = true
			}
			if settled {
				p.settled = max(p.settled, n)
			}
			select {
			case <-stop:
				out <- p
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// paddedFrame is a JSON value of about size bytes carrying seq.
func paddedFrame(seq, size int) []byte {
	return []byte(fmt.Sprintf(`{"seq":%d,"pad":"%s"}`, seq, strings.Repeat("x", size)))
}

// A phone sending large messages back to back, faster than the relay
// validates them, is slowed by TCP rather than buffered without limit or
// dropped: the relay pauses reading it at MaxInputBufferBytes, every
// message still reaches the binary once, whole and in order, and the
// relay's inbound buffers stay within the documented bound.
func TestFloodingPhoneIsPausedNotDropped(t *testing.T) {
	const (
		messages = 300
		size     = 200 << 10
		bound    = 512 << 10 // MaxInputBufferBytes (the default: 2 × MaxMessageBytes)
	)
	r := startRelay(t, loop.Config{BinaryOutboxBytes: 256 << 20})
	bin := r.binary(t, "flood-1")
	ph := r.phone(t, "flood-1")
	connIDOf(t, ph, bin)

	stop := make(chan struct{})
	peak := inputGauge(r, bound, stop)
	sendErr := make(chan error, 1)
	go func() {
		for i := range messages {
			if err := ph.conn.WriteMessage(websocket.TextMessage, paddedFrame(i, size)); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	for i := range messages {
		env := bin.next(t)
		var got struct {
			Frame struct {
				Seq int    `json:"seq"`
				Pad string `json:"pad"`
			} `json:"frame"`
		}
		if err := json.Unmarshal(env, &got); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got.Frame.Seq != i || len(got.Frame.Pad) != size {
			t.Fatalf("message %d arrived as seq %d with %d bytes of padding", i, got.Frame.Seq, len(got.Frame.Pad))
		}
	}
	close(stop)
	if err := <-sendErr; err != nil {
		t.Fatalf("phone's writes failed: %v", err)
	}
	peaks := <-peak
	c := r.Counters()
	t.Logf("pauses: input_full %d, yield %d; direct reads %d B; inbound peak %d B, %d B once paused", c.Paused(loop.PauseInputFull), c.Paused(loop.PauseYield), c.DirectReadBytes.Load(), peaks.all, peaks.settled)
	if c.Paused(loop.PauseInputFull)+c.Paused(loop.PauseYield) == 0 {
		t.Fatalf("the relay never paused a phone that sent %d MiB back to back", messages*size>>20)
	}
	// Once paused, a connection's input is bounded by MaxInputBufferBytes:
	// the relay reads only what keeps it there. While a turn runs, the
	// fragments it has appended to the message being reassembled are held
	// twice until the turn ends: at most a turn (64 KiB) and the frame that
	// ends it (gorilla writes 4 KiB fragments). Before the pause, netpoll
	// reads ahead for as long as the read task waits for a worker
	// (docs/operations.md); that is reported above, not asserted.
	if limit := int64(bound + 64<<10 + 4<<10); peaks.settled > limit {
		t.Fatalf("inbound buffers of a paused connection peaked at %d B, over MaxInputBufferBytes + a turn %d B", peaks.settled, limit)
	}
	if n := c.Close(loop.CloseBinaryBacklog) + c.Close(loop.ClosePeer); n != 0 {
		t.Fatalf("%d connections closed during the flood", n)
	}
}

// deafBinary claims serverID over a raw socket with a tiny receive buffer
// and never reads again: everything the relay sends it piles up.
func deafBinary(t *testing.T, addr, serverID string) net.Conn {
	t.Helper()
	c, err := wsclient.DialTCP(addr, wsclient.Options{Timeout: testTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
		})
	}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.Conn.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := c.Upgrade(wsclient.Request{Path: "/v1/server", Host: "relay.test", Key: wsclient.SampleKey, Lines: rawBinaryLines(serverID)}); err != nil {
		t.Fatalf("deaf binary's upgrade: %v", err)
	}
	return c.Conn
}

// bigFrameDialer writes each message as one frame.
var bigFrameDialer = websocket.Dialer{HandshakeTimeout: testTimeout, WriteBufferSize: 512 << 10}

// bigFramePhones dials n phones on serverID with bigFrameDialer; the test
// writes on them directly.
func bigFramePhones(t *testing.T, addr, serverID string, n int) []*websocket.Conn {
	t.Helper()
	var phones []*websocket.Conn
	for range n {
		c, _, err := bigFrameDialer.Dial("ws://"+addr+"/v1/client", phoneHeaders(serverID))
		if err != nil {
			t.Fatalf("phone: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		phones = append(phones, c)
	}
	return phones
}

func buffered(c *loop.Counters) int64 {
	return c.UnreadBytes.Load() + c.StagedBytes.Load() + c.OutboxBytesQueued.Load()
}

// Past the memory budget's high mark the relay refuses upgrades with 503
// and pauses the readers that feed it, so phones flooding a binary that
// never reads cannot take the relay past its budget; when the binary goes,
// so does the pressure.
func TestMemoryBudgetHighMarkRefusesAndPauses(t *testing.T) {
	const budget = 64 << 20
	r := startRelay(t, loop.Config{MemoryBudgetBytes: budget, BinaryOutboxBytes: 256 << 20})
	deaf := deafBinary(t, r.Addr, "deaf-1")
	phones := bigFramePhones(t, r.Addr, "deaf-1", 4)
	stop := make(chan struct{})
	var most atomic.Int64
	go func() {
		for {
			most.Store(max(most.Load(), buffered(r.Counters())))
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	for i, c := range phones {
		go func() {
			_ = c.SetWriteDeadline(time.Now().Add(testTimeout))
			for j := range 2000 {
				if c.WriteMessage(websocket.TextMessage, paddedFrame(i*10000+j, 64<<10)) != nil {
					return
				}
			}
		}()
	}
	high := int64(budget / 100 * 80)
	waitFor(t, "buffers past the high mark", func() bool { return buffered(r.Counters()) >= high })
	_, resp, err := dial(t, r.Addr, "/v1/client", phoneHeaders("deaf-1"))
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("upgrade past the high mark: %v (response %v), want 503", err, resp)
	}
	c := r.Counters()
	if c.Reject(loop.RejectOverloaded) == 0 {
		t.Fatal("the 503 was not counted as overloaded")
	}
	if c.Paused(loop.PauseBudget)+c.Paused(loop.PauseInputFull)+c.Paused(loop.PauseYield) == 0 {
		t.Fatal("no phone was paused")
	}
	close(stop)
	// Pausing at the high mark keeps the relay under its limit: nothing
	// was closed for the budget.
	if n := c.Close(loop.CloseMemoryBudget); n != 0 || most.Load() > budget {
		t.Fatalf("buffers peaked at %d B of a %d B budget, %d closed for it", most.Load(), budget, n)
	}
	t.Logf("peak %d B of a %d B budget; pauses for the budget %d", most.Load(), budget, c.Paused(loop.PauseBudget))

	_ = deaf.Close()
	waitFor(t, "buffers back under the high mark", func() bool { return buffered(c) < high })
	if _, resp, err := dial(t, r.Addr, "/v1/client", phoneHeaders("deaf-1")); err != nil {
		t.Fatalf("upgrade after the pressure went: %v (response %v)", err, resp)
	}
}

// At the budget itself the relay closes the connection holding the most
// (here the binary that never reads, with its outbox) with 1013, and its
// memory comes back.
func TestMemoryBudgetLimitClosesLargestHolder(t *testing.T) {
	const budget = 2 << 20
	r := startRelay(t, loop.Config{MemoryBudgetBytes: budget, BinaryOutboxBytes: 256 << 20, PhonesPerServer: 64})
	deafBinary(t, r.Addr, "deaf-2")
	c := r.Counters()
	// Every phone connects first: past the high mark upgrades get 503.
	phones := bigFramePhones(t, r.Addr, "deaf-2", 40)
	// Then one message each, one whole frame, so no turn ends between
	// frames and no pause holds them back: 8 MB for a binary that reads
	// nothing, more than the kernel's buffers and the budget together.
	for i, p := range phones {
		if err := p.WriteMessage(websocket.TextMessage, paddedFrame(i, 200<<10)); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	deadline := time.Now().Add(testTimeout)
	for c.Close(loop.CloseMemoryBudget) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no close for the memory budget: buffered %d (outbox %d, staged %d, unread %d), pauses %d/%d, closes %v",
				buffered(c), c.OutboxBytesQueued.Load(), c.StagedBytes.Load(), c.UnreadBytes.Load(),
				c.Paused(loop.PauseBudget), c.Paused(loop.PauseInputFull), r.Counters().Close(loop.ClosePeer))
		}
		time.Sleep(2 * time.Millisecond)
	}
	// The binary's outbox is discarded at once; its socket waits out the
	// write timeout for the close frame it will never read.
	waitFor(t, "the closed binary's memory back", func() bool { return buffered(c) < budget/2 })
	t.Logf("closed for the budget: %d; buffered now %d B", c.Close(loop.CloseMemoryBudget), buffered(c))
}

// Phones sending faster than their binary reads (here: while it does not
// read at all) are slowed, not closed: each one whose frame leaves the
// binary's outbox more than half full waits until the outbox drains, and
// when the binary reads again every message arrives, in order per phone.
func TestPhonesFasterThanTheirBinaryAreSlowedNotClosed(t *testing.T) {
	const (
		phones   = 4
		messages = 100
		size     = 32 << 10
	)
	r := startRelay(t, loop.Config{BinaryOutboxBytes: 1 << 20})
	// A small receive buffer on the binary's side, so the kernel does not
	// absorb what the relay sends it (loopback's can grow to tcp_rmem's
	// maximum, 32 MiB on some machines).
	smallRcv := websocket.Dialer{HandshakeTimeout: testTimeout, NetDial: func(network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: testTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
			})
		}}
		return d.Dial(network, addr)
	}}
	bc, _, err := smallRcv.Dial("ws://"+r.Addr+"/v1/server", binaryHeaders("busy-1"))
	if err != nil {
		t.Fatalf("binary: %v", err)
	}
	bc.SetReadLimit(64 << 20)
	bin := &peer{conn: bc, events: make(chan event, 4096)}
	t.Cleanup(func() { _ = bc.Close() })
	var senders []*peer
	for range phones {
		senders = append(senders, r.phone(t, "busy-1"))
	}
	// Each phone's first message tells its conn_id; the binary reads them
	// directly, then stops reading until its phones have had to wait.
	ids := map[string]int{}
	for i, p := range senders {
		p.send(t, `{"hello":1}`)
		_ = bc.SetReadDeadline(time.Now().Add(testTimeout))
		_, env, err := bc.ReadMessage()
		if err != nil {
			t.Fatalf("hello %d: %v", i, err)
		}
		var got struct {
			ConnID string `json:"conn_id"`
		}
		if err := json.Unmarshal(env, &got); err != nil {
			t.Fatalf("hello %d: %v", i, err)
		}
		ids[got.ConnID] = i
	}
	_ = bc.SetReadDeadline(time.Time{})
	errs := make(chan error, phones)
	for i, p := range senders {
		go func() {
			for j := range messages {
				if err := p.conn.WriteMessage(websocket.TextMessage, paddedFrame(i*100000+j, size)); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	c := r.Counters()
	waitFor(t, "a phone waiting for its binary", func() bool { return c.Parks.Load() > 0 })
	go bin.readLoop() // the binary reads again: its phones are let go
	next := make([]int, phones)
	for n := range phones * messages {
		env := bin.next(t)
		var got struct {
			ConnID string `json:"conn_id"`
			Frame  struct {
				Seq int `json:"seq"`
			} `json:"frame"`
		}
		if err := json.Unmarshal(env, &got); err != nil {
			t.Fatalf("envelope %d: %v", n, err)
		}
		i, ok := ids[got.ConnID]
		if !ok || got.Frame.Seq != i*100000+next[i] {
			t.Fatalf("envelope %d: phone %q seq %d, want phone %d's message %d", n, got.ConnID, got.Frame.Seq, i, next[i])
		}
		next[i]++
	}
	for range phones {
		if err := <-errs; err != nil {
			t.Fatalf("a phone's writes failed: %v", err)
		}
	}
	t.Logf("parks %d; pauses: binary_busy %d, input_full %d, yield %d", c.Parks.Load(), c.Paused(loop.PauseBinaryBusy), c.Paused(loop.PauseInputFull), c.Paused(loop.PauseYield))
	if n := c.Close(loop.CloseBinaryBacklog); n != 0 {
		t.Fatalf("%d phones closed 1011 binary backlog full", n)
	}
	if c.Parks.Load() == 0 {
		t.Fatal("no phone waited for its busy binary")
	}
}

// Paused connections hold no goroutine, and end cleanly whichever way they
// end: their peer dropping TCP while they wait, or the relay shutting down
// (1001 reaches a paused phone at once, and its answer is read).
func TestPausedConnectionsEndCleanly(t *testing.T) {
	const phones = 12
	// A linger far longer than the test allows for the close: the phones'
	// answers, read from their paused sockets, must end them.
	const linger = 30 * time.Second
	r := startRelay(t, loop.Config{BinaryOutboxBytes: 1 << 20, PhonesPerServer: phones, CloseLinger: linger})
	deaf := deafBinary(t, r.Addr, "paused-1")
	var ps []*peer
	for range phones {
		p := r.phone(t, "paused-1")
		// gorilla's own answer gives up after a second waiting for the
		// flooding writer; on a loaded machine that is not enough.
		p.conn.SetCloseHandler(func(code int, _ string) error {
			return p.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(testTimeout))
		})
		ps = append(ps, p)
	}
	before := runtime.NumGoroutine()
	// Each phone writes until TCP stops taking its writes: the relay has
	// paused it. Its writer stays blocked in the test, not in the relay.
	// It stops once the shutdown begins, so that gorilla, whose close
	// answer waits for the writer, can answer the relay's 1001.
	var stop atomic.Bool
	for i, p := range ps {
		go func() {
			for j := 0; j < 2000 && !stop.Load(); j++ {
				if p.conn.WriteMessage(websocket.TextMessage, paddedFrame(i*10000+j, 16<<10)) != nil {
					return
				}
			}
		}()
	}
	c := r.Counters()
	waitFor(t, "every phone paused", func() bool { return c.PausedNow.Load() == phones })
	// The relay runs no goroutine for a paused connection: beyond the
	// test's own flooders (one each) a constant few: the binary's writer
	// waiting for room, writers finishing, a budget timer.
	if after := runtime.NumGoroutine(); after > before+phones+4 {
		t.Fatalf("%d goroutines with %d phones paused, %d before they flooded (+%d flooders)", after, phones, before, phones)
	}

	// A third drop their TCP connection while paused.
	for _, p := range ps[:phones/3] {
		_ = p.conn.UnderlyingConn().Close()
	}
	// The relay shuts down: every paused phone gets 1001 and answers it.
	stop.Store(true)
	start := time.Now()
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		shut <- r.Shutdown(ctx)
	}()
	for _, p := range ps[phones/3:] {
		if code, _ := p.closed(t); code != 1001 {
			t.Fatalf("paused phone closed with %d, want 1001", code)
		}
	}
	waitFor(t, "the phones' connections ended", func() bool { return r.Live() <= 1 })
	if d := time.Since(start); d >= linger/3 {
		t.Fatalf("paused phones took %v to end after shutdown began: the linger was waited out", d)
	}
	_ = deaf.Close() // the binary never reads its 1001: let the drain end
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	waitFor(t, "nothing paused or held", func() bool {
		return c.PausedNow.Load() == 0 && c.StagedBytes.Load() == 0 && r.Live() == 0
	})
}

// Paused phones still open when the drain deadline passes (silent peers
// that never read their 1001) are closed by the relay's stop like every
// other connection: nothing paused outlives Shutdown.
func TestShutdownClosesPausedConnectionsPastTheDrain(t *testing.T) {
	const phones = 16
	r := startRelay(t, loop.Config{BinaryOutboxBytes: 1 << 20, PhonesPerServer: phones,
		DrainTimeout: 300 * time.Millisecond, CloseLinger: time.Minute})
	deafBinary(t, r.Addr, "drain-1")
	var ps []*rawClient
	for range phones {
		ps = append(ps, rawPhone(t, r.Addr, "drain-1"))
	}
	frame := wsclient.Masked(true, wsclient.OpText, paddedFrame(1, 16<<10))
	done := make(chan struct{}, phones)
	for _, p := range ps {
		go func() {
			defer func() { done <- struct{}{} }()
			// Write until TCP stops taking it; then the phone is silent.
			_ = p.Conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
			for {
				if _, err := p.Conn.Write(frame); err != nil {
					return
				}
			}
		}()
	}
	c := r.Counters()
	waitFor(t, "every phone paused", func() bool { return c.PausedNow.Load() == phones })
	for range phones {
		<-done
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_ = r.Shutdown(ctx)
	waitFor(t, "nothing paused or open", func() bool { return c.PausedNow.Load() == 0 && r.Live() == 0 })
	// Each phone's socket was closed by the relay: after whatever it was
	// sent, the read ends.
	buf := make([]byte, 64<<10)
	for i, p := range ps {
		_ = p.Conn.SetReadDeadline(time.Now().Add(testTimeout))
		for {
			_, err := p.Conn.Read(buf)
			if err == nil {
				continue
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("phone %d: the relay never closed its socket", i)
			}
			break
		}
	}
}

// A close that arrives while a paused socket is about to wait for input
// (after the turn's last look for one) still ends the connection, though
// its peer then stays silent.
func TestCloseJustBeforeAPausedSocketWaitsIsNotLost(t *testing.T) {
	r := startRelay(t, loop.Config{BinaryOutboxBytes: 256 << 20})
	bin := r.binary(t, "arm-1")
	ph := bigFramePhones(t, r.Addr, "arm-1", 1)[0]
	c := r.Counters()
	sent := 0
	for c.PausedNow.Load() == 0 {
		if sent == 2000 {
			t.Fatal("a phone sending 400 MB back to back was never paused")
		}
		if err := ph.WriteMessage(websocket.TextMessage, paddedFrame(sent, 200<<10)); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	for range sent {
		bin.next(t)
	}
	// The phone is paused and idle. Its next message makes a turn that ends
	// by waiting for input: the close lands just before.
	loop.CloseAtNextArm(t)
	if err := ph.WriteMessage(websocket.TextMessage, []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	bin.next(t)
	waitFor(t, "the paused phone closed", func() bool { return c.PausedNow.Load() == 0 && r.Phones() == 0 })
}
