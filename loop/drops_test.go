package loop_test

// Every frame the relay does not deliver is counted under a reason
// (issue 11 item 9). Each test here makes one kind of drop happen over real
// loopback sockets and asserts its counter moved; the waits are on events
// and counters, bounded by testTimeout.

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"switchboard/internal/wsclient"
	"switchboard/loop"
)

// smallMessagesInput is MaxInputBufferBytes for these tests, which shrink
// MaxMessageBytes to keep outboxes small. The default (2 × 4 KiB) would
// clamp each socket's SO_RCVBUF to 4 KiB (server.go onPrepare), far below
// loopback's 64 KiB MSS, and a flooding sender then crawls at tens of KB/s.
const smallMessagesInput = 256 << 10

// A phone that leaves while its binary is gone (the slot in its grace
// window) or closing has a close notice nobody can take: it is counted as
// close_notice_lost, and a notice that is delivered is not.
func TestCloseNoticeLostCounted(t *testing.T) {
	r := startRelay(t, loop.Config{GracePeriod: time.Minute})
	c := r.Counters()
	b := r.binary(t, "notice-lost")
	delivered := r.phone(t, "notice-lost")
	lost := r.phone(t, "notice-lost")
	id := connIDOf(t, delivered, b)
	connIDOf(t, lost, b)

	// With the binary live, the notice goes out and nothing is counted.
	_ = delivered.conn.Close()
	if got, want := string(b.next(t)), notice(id, 1001); got != want {
		t.Fatalf("binary got %s, want %s", got, want)
	}
	if n := c.Drop(loop.DropCloseNoticeLost); n != 0 {
		t.Fatalf("close_notice_lost = %d with the binary live", n)
	}

	// The binary drops TCP: its slot waits out the grace window with the
	// remaining phone still registered, and its outbox is closed.
	_ = b.conn.Close()
	waitFor(t, "binary in grace", func() bool { return r.Binaries() == 0 && r.Live() == 1 })
	if r.Phones() != 1 {
		t.Fatalf("%d phones, want 1 (grace keeps them)", r.Phones())
	}
	_ = lost.conn.Close()
	waitFor(t, "close_notice_lost counted", func() bool { return c.Drop(loop.DropCloseNoticeLost) == 1 })
	waitFor(t, "phone detached", func() bool { return r.Phones() == 0 && r.Live() == 0 })
	if n := c.Drop(loop.DropBinaryBacklog); n != 0 {
		t.Fatalf("binary_backlog_full = %d: the lost notice was counted twice", n)
	}
}

// A binary so far behind that its outbox is past even the notice
// allowance (64 KiB over its budget) cannot take more close notices: the
// ones that do not fit are counted as close_notice_lost too, and the binary
// is not closed for it.
func TestCloseNoticeOverflowCounted(t *testing.T) {
	const phones = 800 // 800 notices of ~115 charged bytes: more than the 64 KiB allowance
	r := startRelay(t, loop.Config{
		MaxMessageBytes:     4 << 10,
		MaxInputBufferBytes: smallMessagesInput,
		BinaryOutboxBytes:   16 << 10,
		PhonesPerServer:     phones,
		WriteTimeout:        time.Minute,
	})
	c := r.Counters()
	holder := rawUpgrade(t, r.Addr, "/v1/server", rawBinaryLines("notices"), nil)
	spendControlSlack(t, r, holder) // socket full, outbox past its budget
	ps := make([]*peer, phones)
	for i := range ps {
		ps[i] = r.phone(t, "notices")
	}
	for _, p := range ps {
		_ = p.conn.Close()
	}
	waitLong(t, r, 2*testTimeout, "every phone detached", func() bool { return r.Phones() == 0 })
	lost := c.Drop(loop.DropCloseNoticeLost)
	t.Logf("%d phones left, %d close notices lost", phones, lost)
	if lost == 0 || lost >= phones {
		t.Fatalf("close_notice_lost = %d of %d: want some queued within the allowance and the rest counted", lost, phones)
	}
	if r.Binaries() != 1 || c.Close(loop.CloseBinaryBacklog)+c.Close(loop.CloseWriteFailed) != 0 {
		t.Fatalf("binaries %d; relay: %s", r.Binaries(), counterSummary(r))
	}
}

// stuckPhone is a raw phone of serverID that never reads its socket: what
// the relay sends it fills the socket buffers and then its outbox.
func stuckPhone(t *testing.T, r *relay, b *peer, serverID string) (*rawClient, string) {
	t.Helper()
	rc := rawPhone(t, r.Addr, serverID)
	rc.write(wsclient.Masked(true, wsclient.OpText, []byte(`{"hello":1}`)))
	id, err := envelopeConnID(b.next(t))
	if err != nil {
		t.Fatal(err)
	}
	return rc, id
}

// writeFresh is write with a deadline of its own: the control tests send
// up to a million pings, which on a loaded machine take longer than the one
// deadline rawDial gives the whole exchange. Each loop around it is bounded
// by a count.
func (rc *rawClient) writeFresh(b []byte) {
	rc.t.Helper()
	_ = rc.Conn.SetWriteDeadline(time.Now().Add(testTimeout))
	rc.write(b)
}

// spendControlSlack has rc, a peer that reads nothing, send pings until
// its outbox holds so much that not even a ping fits within the budget
// plus controlSlack, and returns how many it sent. The pongs fill the
// socket buffers first (several MiB on loopback), then the outbox.
func spendControlSlack(t *testing.T, r *relay, rc *rawClient) (sent int) {
	t.Helper()
	c := r.Counters()
	// Pings with the largest payload: each pong is 127 bytes on the wire.
	var burst []byte
	for range 64 {
		burst = append(burst, wsclient.Masked(true, wsclient.OpPing, bytes.Repeat([]byte{'p'}, 125))...)
	}
	ping := func(what string, done func() bool) {
		for !done() {
			rc.writeFresh(burst)
			sent += 64
			if sent > 1<<20 {
				t.Fatalf("%d pings (%d MiB of pongs) unread and no %s; relay: %s", sent, sent*127>>20, what, counterSummary(r))
			}
		}
	}
	// One read turn's burst of pongs can overflow an outbox whose writer
	// has not run yet; what counts is an outbox that cannot drain. So
	// first the socket fills (its writer waits for room, and keeps
	// waiting: the peer never reads), and only then the outbox.
	ping("write wait", func() bool { return c.WriteWaits.Load() > 0 })
	overflows := c.Drop(loop.DropPongOverflow)
	ping("pong overflow", func() bool { return c.Drop(loop.DropPongOverflow) > overflows })
	// Top it off with empty pings, whose pongs cost what a ping costs,
	// until some of them overflow too: then not even a ping fits. (The
	// kernel still takes a little now and then, as it collapses the unread
	// segments it holds, so callers keep topping off while they need it.)
	before := c.Drop(loop.DropPongOverflow)
	topOff := bytes.Repeat(wsclient.Masked(true, wsclient.OpPing, nil), 8)
	for c.Drop(loop.DropPongOverflow) < before+8 {
		if sent > 2<<20 {
			t.Fatalf("%d pings and the outbox still takes empty pongs; relay: %s", sent, counterSummary(r))
		}
		rc.writeFresh(topOff)
		sent += 8
	}
	return sent
}

// A peer that sends pings and reads nothing fills its outbox with pongs
// until the budget plus controlSlack is spent: further pongs and the
// heartbeat's pings are dropped, each counted, and the connection is not
// closed for it. When the peer then leaves, the pongs never written are
// counted as discarded_on_close.
func TestControlOverflowCounted(t *testing.T) {
	r := startRelay(t, loop.Config{
		MaxMessageBytes:     4 << 10,
		MaxInputBufferBytes: smallMessagesInput,
		PhoneOutboxBytes:    8 << 10,
		HeartbeatInterval:   20 * time.Millisecond,
		PongTimeout:         time.Minute, // the test is over long before
		WriteTimeout:        time.Minute, // the stuck writer must not give up
	})
	c := r.Counters()
	b := r.binary(t, "ctl")
	rc, _ := stuckPhone(t, r, b, "ctl")

	sent := spendControlSlack(t, r, rc)
	// Keep the outbox topped off until a heartbeat ping finds no room.
	topOff := bytes.Repeat(wsclient.Masked(true, wsclient.OpPing, nil), 8)
	for c.Drop(loop.DropPingOverflow) == 0 {
		if sent > 2<<20 {
			t.Fatalf("%d pings and no heartbeat ping overflowed; relay: %s", sent, counterSummary(r))
		}
		rc.writeFresh(topOff)
		sent += 8
	}
	t.Logf("%d pings sent before the first pong overflow; drops: pong %d, ping %d",
		sent, c.Drop(loop.DropPongOverflow), c.Drop(loop.DropPingOverflow))
	if r.Live() != 2 || r.Phones() != 1 {
		t.Fatalf("live %d phones %d: a control overflow closed a connection", r.Live(), r.Phones())
	}
	if n := c.Drop(loop.DropDiscardedOnClose); n != 0 {
		t.Fatalf("discarded_on_close = %d before anything closed", n)
	}

	// The peer leaves with pongs unwritten: those of the writer's stuck
	// batch, and any queued behind it.
	_ = rc.Conn.Close()
	waitLong(t, r, testTimeout, "unwritten pongs discarded", func() bool { return c.Drop(loop.DropDiscardedOnClose) > 0 })
	waitFor(t, "phone gone, its queue freed", func() bool {
		return r.Phones() == 0 && r.Live() == 1 && c.OutboxBytesQueued.Load() == 0
	})
}

// A phone whose outbox overflows is closed with its queued frames dropped:
// the frame that did not fit is phone_backlog_full, and every frame that
// was queued and never written (dropped for the close frame, still queued
// when the socket closed, or in the writer's batch when its write failed)
// is discarded_on_close, each once.
func TestDiscardedOnCloseCounted(t *testing.T) {
	r := startRelay(t, loop.Config{
		MaxMessageBytes:     4 << 10,
		MaxInputBufferBytes: smallMessagesInput,
		PhoneOutboxBytes:    64 << 10,
		WriteTimeout:        time.Minute,
	})
	c := r.Counters()
	b := r.binary(t, "discard")
	rc, id := stuckPhone(t, r, b, "discard")

	env := `{"conn_id":"` + id + `","frame":"` + strings.Repeat("d", 1000) + `"}`
	sent := 0
	for c.Drop(loop.DropPhoneBacklog) == 0 {
		b.send(t, env)
		if sent++; sent > 64<<10 { // 64 MiB
			t.Fatalf("%d frames to a phone that never reads and no overflow; relay: %s", sent, counterSummary(r))
		}
	}
	waitFor(t, "the phone closed for its backlog", func() bool { return c.Close(loop.ClosePhoneBacklog) == 1 })
	// The close frame waits behind the stuck write; the peer gives up.
	_ = rc.Conn.Close()
	waitFor(t, "discarded frames counted", func() bool { return c.Drop(loop.DropDiscardedOnClose) > 0 })
	waitFor(t, "phone gone, its queue freed", func() bool {
		return r.Phones() == 0 && r.Live() == 1 && c.OutboxBytesQueued.Load() == 0
	})
	forwarded := c.BinaryToPhone.Load()
	t.Logf("%d frames sent, %d queued; dropped: backlog %d, discarded %d, closing %d",
		sent, forwarded, c.Drop(loop.DropPhoneBacklog), c.Drop(loop.DropDiscardedOnClose), c.Drop(loop.DropPhoneClosing))
	if d := c.Drop(loop.DropDiscardedOnClose); d > forwarded+1 { // the frames queued, plus the close frame
		t.Fatalf("discarded_on_close %d, but only %d frames were queued", d, forwarded)
	}
}

// A holder that is alive but backlogged (it stopped reading while a phone
// flooded it and its own pings went unanswered, so its outbox is past its
// budget and past controlSlack) still gets the takeover probe's ping,
// answers it once it reads again, and the newcomer is refused 4409: a full
// outbox alone must not hand its slot to a rival.
func TestProbePingReachesBackloggedHolder(t *testing.T) {
	r := startRelay(t, loop.Config{
		MaxMessageBytes:     4 << 10,
		MaxInputBufferBytes: smallMessagesInput,
		BinaryOutboxBytes:   16 << 10,
		WriteTimeout:        time.Minute,
		TakeoverTimeout:     5 * time.Second, // with a dropped probe ping, this is when the takeover would come
	})
	c := r.Counters()
	holder := rawUpgrade(t, r.Addr, "/v1/server", rawBinaryLines("backlog"), nil)
	// From here the holder reads nothing until the probe's ping is queued.

	// A phone floods it until the relay parks the phone (its frames left
	// the holder's outbox more than half full: congestion.go).
	p := r.phone(t, "backlog")
	frame := []byte(`{"flood":"` + strings.Repeat("f", 1000) + `"}`)
	var stopFlood atomic.Bool
	go func() {
		for !stopFlood.Load() && p.conn.WriteMessage(websocket.TextMessage, frame) == nil {
		}
	}()
	waitFor(t, "the flooding phone parked", func() bool { return c.Parks.Load() > 0 })
	stopFlood.Store(true) // once the holder drains and the phone wakes
	// Spend controlSlack too, so a ping queued within the budget plus
	// slack (as every ping was before) would be dropped now, and keep it
	// spent (the kernel takes a little now and then) until the probe's
	// ping is queued.
	spendControlSlack(t, r, holder)
	stopTopOff, toppedOff := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(toppedOff)
		topOff := bytes.Repeat(wsclient.Masked(true, wsclient.OpPing, nil), 8)
		for {
			select {
			case <-stopTopOff:
				return
			default:
			}
			if _, err := holder.Conn.Write(topOff); err != nil {
				return
			}
		}
	}()

	reached, resume := pauseAt(t, "probe-sent", func(serverID, _ string) bool { return serverID == "backlog" })
	type result struct {
		code int
		text string
		err  error
	}
	newcomer := make(chan result, 1)
	go func() {
		nc, _, err := dialer.Dial("ws://"+r.Addr+"/v1/server", binaryHeaders("backlog"))
		if err != nil {
			newcomer <- result{err: err}
			return
		}
		defer nc.Close()
		_ = nc.SetReadDeadline(time.Now().Add(testTimeout))
		_, _, err = nc.ReadMessage()
		res := result{err: err}
		if ce, ok := err.(*websocket.CloseError); ok {
			res = result{code: ce.Code, text: ce.Text}
		}
		newcomer <- res
	}()
	select {
	case <-reached:
	case <-time.After(testTimeout):
		t.Fatal("no takeover probe started")
	}
	close(stopTopOff)
	<-toppedOff
	pingDrops := c.Drop(loop.DropPingOverflow)
	resume()

	// The holder reads again: through the flood, the pongs and the notice,
	// to the probe's ping, which it answers.
	_ = holder.Conn.SetDeadline(time.Now().Add(testTimeout))
	frames := make(chan wsclient.Frame, 1<<16)
	var readErr atomic.Value
	go func() {
		defer close(frames)
		for {
			f, err := holder.readFrame()
			if err != nil {
				readErr.Store(err)
				return
			}
			frames <- f
		}
	}()
	until := func(what string, match func(wsclient.Frame) bool) (read int) {
		t.Helper()
		for {
			select {
			case f, ok := <-frames:
				if !ok {
					t.Fatalf("holder's stream ended before %s, after %d frames: %v", what, read, readErr.Load())
				}
				read++
				if match(f) {
					return read
				}
			case <-time.After(testTimeout):
				t.Fatalf("no %s after %d frames", what, read)
			}
		}
	}
	read := until("probe ping", func(f wsclient.Frame) bool {
		if f.Op == wsclient.OpPing {
			holder.write(wsclient.Masked(true, wsclient.OpPong, f.Payload))
			return true
		}
		return false
	})
	select {
	case res := <-newcomer:
		if res.err != nil || res.code != 4409 || res.text != "server-id already claimed" {
			t.Fatalf("newcomer got %d %q (%v), want 4409: a backlogged holder's probe went unanswered", res.code, res.text, res.err)
		}
	case <-time.After(testTimeout):
		t.Fatal("newcomer not answered")
	}
	t.Logf("holder read %d frames to reach the probe's ping; pong_overflow %d", read, c.Drop(loop.DropPongOverflow))
	if c.Takeovers.Load() != 0 || c.Close(loop.CloseTakenOver) != 0 {
		t.Fatalf("takeovers %d, taken_over closes %d", c.Takeovers.Load(), c.Close(loop.CloseTakenOver))
	}
	if n := c.Drop(loop.DropPingOverflow); n != pingDrops {
		t.Fatalf("ping_overflow went %d -> %d: the probe's ping was dropped", pingDrops, n)
	}

	// The holder still holds the slot, and once it has caught up it serves
	// a new phone.
	waitFor(t, "the holder's outbox drained", func() bool {
		if err := readErr.Load(); err != nil {
			t.Fatalf("holder's reader: %v; relay: %s", err, counterSummary(r))
		}
		return c.OutboxBytesQueued.Load() == 0
	})
	p2 := mustDial(t, r.Addr, "/v1/client", phoneHeaders("backlog"))
	p2.send(t, `{"after":1}`)
	until("the new phone's frame", func(f wsclient.Frame) bool {
		return f.Op == wsclient.OpText && strings.HasSuffix(string(f.Payload), `"frame":{"after":1}}`)
	})
	if r.Binaries() != 1 {
		t.Fatalf("%d binaries, want the holder alone", r.Binaries())
	}
}
