package loop

import (
	"testing"

	"github.com/gobwas/ws"

	"switchboard/wsframe"
)

// pushWire queues a copy of wire, a whole frame, with the given slack.
func pushWire(fc *fakeConn, wire []byte, slack int) pushResult {
	b := framePool.Get()
	b.B = append(b.B[:0], wire...)
	return fc.c.out.push(b, slack)
}

// closeWire is a whole close frame.
func closeWire(code uint16, reason string) []byte { return wsframe.AppendClose(nil, code, reason) }

var pushResultNames = [...]string{pushed: "pushed", pushedCongested: "pushedCongested", pushOverflow: "pushOverflow", pushClosed: "pushClosed"}

// resultName names r in failure messages.
func resultName(r pushResult) string { return pushResultNames[r] }

// expectDrops requires every drop counter but the ones listed to be 0.
func expectDrops(t *testing.T, r *unitRelay, want map[DropReason]uint64) {
	t.Helper()
	for d := range numDropReasons {
		if got := r.srv.counters.Drop(d); got != want[d] {
			t.Errorf("Drops[%v] = %d, want %d", d, got, want[d])
		}
	}
}

// expectCloses requires every close counter but the ones listed to be 0.
func expectCloses(t *testing.T, r *unitRelay, want map[CloseReason]uint64) {
	t.Helper()
	for c := range numCloseReasons {
		if got := r.srv.counters.Close(c); got != want[c] {
			t.Errorf("Closes[%v] = %d, want %d", c, got, want[c])
		}
	}
}

// The budget, pushed against with the 101 held so that no writer runs and
// nothing leaves the outbox: frames are charged len + OutboxItemOverhead,
// exactly floor((limit - cost101) / cost) of them fit with no slack, the
// frame that takes the charge past half the budget is the first to report
// pushedCongested, controlSlack lets control frames past the limit by at
// most controlSlack, noBudget queues whatever is held, a refused frame
// changes nothing and counts no drop (its caller counts it), and
// OutboxBytesQueued equals the charge at every step. Released, the peer
// reads exactly what was queued, in order.
func TestOutboxBudgetCounts(t *testing.T) {
	const size = 100 // payload bytes: a 2-byte header
	data := func(i int) []byte { return wireText(payloadN(i, size)) }
	cost := len(data(0)) + OutboxItemOverhead // 166
	ping := wsframe.AppendServerHeader(nil, ws.OpPing, 0)
	pingCost := len(ping) + OutboxItemOverhead // 66
	if cost101() != 193 || cost != 166 {
		t.Fatalf("cost101 %d, frame cost %d: the cases below are worked out for 193 and 166", cost101(), cost)
	}
	for _, tc := range []struct {
		name  string
		limit int
		fit   int // frames that fit with no slack
		calm  int // of those, the ones pushed before the outbox is congested
	}{
		// 193 + 20×166 = 3513: the 20th frame lands on the limit exactly.
		// Half is 1756: 193 + 9×166 = 1687 is under it, + 10×166 = 1853 over.
		{"frames fill the budget exactly", cost101() + 20*cost, 20, 9},
		// 3678: the 21st frame would pass it by one byte.
		{"one byte short of another frame", cost101() + 21*cost - 1, 20, 9},
		// 3706, half 1853 = 193 + 10×166: the 10th frame lands on the
		// congestion mark exactly and is not past it; 21 fit (3679).
		{"congestion mark on a frame boundary", 2 * (cost101() + 10*cost), 21, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := unitConfig()
			cfg.PhoneOutboxBytes = tc.limit
			r := newUnitRelay(t, cfg)
			fc := r.newConn(rolePhone)
			fc.c.accept([]byte(wsKey)) // the 101, held: pushHeld

			charged := cost101()
			check := func(when string) {
				t.Helper()
				if got := fc.charged(); got != charged {
					t.Fatalf("%s: outbox charged %d, want %d", when, got, charged)
				}
				if got := r.queuedTotal(); got != int64(charged) {
					t.Fatalf("%s: OutboxBytesQueued %d, want %d", when, got, charged)
				}
			}
			check("the held 101")

			fit, calm := 0, 0
			for i := 0; ; i++ {
				res := pushWire(fc, data(i), 0)
				if res == pushOverflow {
					break
				}
				charged += cost
				switch {
				case res == pushed && fit == calm:
					calm++
				case res != pushedCongested:
					t.Fatalf("frame %d: %s after %d calm and %d congested", i, resultName(res), calm, fit-calm)
				}
				fit++
				check("frame " + resultName(res))
				if charged > tc.limit {
					t.Fatalf("frame %d queued past the limit: charged %d > %d", i, charged, tc.limit)
				}
			}
			check("the first overflow")
			if fit != tc.fit || calm != tc.calm {
				t.Fatalf("%d frames fit, %d of them before congestion; want %d and %d", fit, calm, tc.fit, tc.calm)
			}
			if (tc.limit-cost101())/cost != fit {
				t.Fatalf("%d fit, want floor((limit - cost101) / cost) = %d", fit, (tc.limit-cost101())/cost)
			}
			if got := pushWire(fc, data(999), 0); got != pushOverflow {
				t.Fatalf("a data frame after the overflow: %s, want pushOverflow", resultName(got))
			}
			check("a second overflow")

			// Control frames get controlSlack past the limit, no further.
			pings := 0
			for {
				res := pushWire(fc, ping, controlSlack)
				if res == pushOverflow {
					break
				}
				if res != pushedCongested {
					t.Fatalf("ping %d: %s, want pushedCongested", pings, resultName(res))
				}
				charged += pingCost
				pings++
				check("a ping")
			}
			if charged > tc.limit+controlSlack || charged+pingCost <= tc.limit+controlSlack {
				t.Fatalf("pings stopped at charged %d: want the last within limit+controlSlack (%d) and the next past it", charged, tc.limit+controlSlack)
			}
			if want := (tc.limit + controlSlack - cost101() - fit*cost) / pingCost; pings != want {
				t.Fatalf("%d pings fit in controlSlack, want %d", pings, want)
			}
			check("the pings")

			// noBudget queues however full the outbox is.
			big := wireText(payloadN(500, 1000))
			for range 2 {
				if got := pushWire(fc, big, noBudget); got != pushedCongested {
					t.Fatalf("noBudget frame: %s, want pushedCongested", resultName(got))
				}
				charged += len(big) + OutboxItemOverhead
				check("a noBudget frame")
			}
			if charged <= tc.limit+controlSlack {
				t.Fatalf("charged %d: the noBudget frames were meant to pass limit+controlSlack %d", charged, tc.limit+controlSlack)
			}

			expectDrops(t, r, nil) // push never counts: its caller knows what was refused
			if got := r.srv.counters.Flushes.Load(); got != 0 {
				t.Fatalf("%d flushes while the 101 was held", got)
			}
			if got := fc.queuedFrames(); got != 1+fit+pings+2 {
				t.Fatalf("%d frames queued, want %d", got, 1+fit+pings+2)
			}

			fc.c.out.release()
			fc.expect101()
			for i := range fit {
				fc.expectFrame(ws.OpText, payloadN(i, size))
			}
			for range pings {
				fc.expectPing()
			}
			fc.expectFrame(ws.OpText, payloadN(500, 1000))
			fc.expectFrame(ws.OpText, payloadN(500, 1000))
			fc.waitIdle()
			r.waitQueuedTotal(0)
			fc.closeSocket()
			fc.expectEOF() // and nothing refused was ever written
			expectDrops(t, r, nil)
		})
	}
}

// The final frame: with discard it frees every queued frame except the held
// 101 (which must still precede it) and counts exactly those as
// DropDiscardedOnClose; without, everything queued goes first. From then
// on pushes are refused as closed, whatever their slack, and a second final
// frame is refused. Released, the peer reads what was kept, then the close
// frame, then EOF: the socket is half-closed once it is written.
func TestOutboxFinalFrameDiscards(t *testing.T) {
	for _, discard := range []bool{true, false} {
		name := "discard"
		if !discard {
			name = "keep"
		}
		t.Run(name, func(t *testing.T) {
			r := newUnitRelay(t, unitConfig())
			fc := r.newConn(rolePhone)
			fc.c.accept([]byte(wsKey))
			const queued = 5
			frameCost := len(wireText(payloadN(0, 40))) + OutboxItemOverhead
			for i := range queued {
				if got := pushWire(fc, wireText(payloadN(i, 40)), 0); got != pushed {
					t.Fatalf("frame %d: %s", i, resultName(got))
				}
			}
			closeFrame := closeWire(codeNormal, "bye")
			closeCost := len(closeFrame) + OutboxItemOverhead
			b := framePool.Get()
			b.B = append(b.B[:0], closeFrame...)
			if !fc.c.out.pushFinal(b, lingerClose, discard) {
				t.Fatal("pushFinal refused on an open outbox")
			}
			want := cost101() + closeCost
			dropped := uint64(queued)
			if !discard {
				want += queued * frameCost
				dropped = 0
			}
			if got := fc.charged(); got != want {
				t.Fatalf("charged %d after pushFinal, want %d", got, want)
			}
			if got := r.queuedTotal(); got != int64(want) {
				t.Fatalf("OutboxBytesQueued %d after pushFinal, want %d", got, want)
			}
			expectDrops(t, r, map[DropReason]uint64{DropDiscardedOnClose: dropped})

			for _, slack := range []int{0, controlSlack, noBudget} {
				if got := pushWire(fc, wireText(payloadN(9, 10)), slack); got != pushClosed {
					t.Fatalf("push with slack %d after the final frame: %s, want pushClosed", slack, resultName(got))
				}
			}
			b = framePool.Get()
			b.B = append(b.B[:0], closeWire(codeGoingAway, "again")...)
			if fc.c.out.pushFinal(b, lingerClose, true) {
				t.Fatal("a second final frame was accepted")
			}
			if got := fc.charged(); got != want {
				t.Fatalf("charged %d after refused pushes, want %d", got, want)
			}
			expectDrops(t, r, map[DropReason]uint64{DropDiscardedOnClose: dropped})

			fc.c.out.release()
			fc.expect101()
			if !discard {
				for i := range queued {
					fc.expectFrame(ws.OpText, payloadN(i, 40))
				}
			}
			fc.expectClose(codeNormal, "bye")
			fc.expectEOF()
			// Half-closed, not closed: the relay waits for the peer's answer.
			if got := fc.nc.calls.Load(); got != 0 {
				t.Fatalf("the socket was closed (%d Close calls), want it only shut for writing", got)
			}
			fc.waitIdle()
			r.waitQueuedTotal(0)
		})
	}
}

// A phone's outbox overflowing under its binary's frames (sendToPhone, as a
// binary's envelope reaches it): the frame that did not fit is one
// DropPhoneBacklog, the phone is closed 1011 `phone backlog full` once
// (ClosePhoneBacklog), every frame it had queued is discarded and counted
// as DropDiscardedOnClose, and later frames for it are DropPhoneClosing.
// The binary is untouched. The phone's 101 is held so that its outbox
// fills without a writer draining it.
func TestOutboxPhoneBacklogCloses(t *testing.T) {
	r := newUnitRelay(t, unitConfig())
	const id = "unit-backlog"
	b, ok := r.dial(roleBinary, id, false)
	if !ok {
		t.Fatal("binary claim not decided")
	}
	b.expect101()
	b.waitIdle()
	r.waitQueuedTotal(0)
	p, ok := r.dial(rolePhone, id, true)
	if !ok || p.c.binary != b.c {
		t.Fatal("phone not attached to the binary")
	}

	const size = 100
	cost := len(wireText(payloadN(0, size))) + OutboxItemOverhead
	fit := (r.srv.cfg.PhoneOutboxBytes - cost101()) / cost // 23
	for i := range fit {
		if !b.c.sendToPhone(p.c, payloadN(i, size)) {
			t.Fatalf("frame %d of %d refused", i, fit)
		}
	}
	if got := r.srv.counters.BinaryToPhone.Load(); got != uint64(fit) {
		t.Fatalf("BinaryToPhone %d, want %d", got, fit)
	}
	expectDrops(t, r, nil)
	if b.c.sendToPhone(p.c, payloadN(fit, size)) {
		t.Fatal("the frame past the budget was queued")
	}
	expectDrops(t, r, map[DropReason]uint64{DropPhoneBacklog: 1, DropDiscardedOnClose: uint64(fit)})
	expectCloses(t, r, map[CloseReason]uint64{ClosePhoneBacklog: 1})
	closeCost := len(closeWire(codeInternal, "phone backlog full")) + OutboxItemOverhead
	if got := p.charged(); got != cost101()+closeCost {
		t.Fatalf("phone charged %d, want the 101 and the close frame, %d", got, cost101()+closeCost)
	}
	if got := r.queuedTotal(); got != int64(cost101()+closeCost) {
		t.Fatalf("OutboxBytesQueued %d, want %d", got, cost101()+closeCost)
	}

	if b.c.sendToPhone(p.c, payloadN(fit+1, size)) {
		t.Fatal("a frame for a closing phone was queued")
	}
	expectDrops(t, r, map[DropReason]uint64{DropPhoneBacklog: 1, DropDiscardedOnClose: uint64(fit), DropPhoneClosing: 1})
	expectCloses(t, r, map[CloseReason]uint64{ClosePhoneBacklog: 1})
	if got := r.srv.counters.BinaryToPhone.Load(); got != uint64(fit) {
		t.Fatalf("BinaryToPhone %d, want %d", got, fit)
	}

	p.c.out.release()
	p.expect101()
	p.expectClose(codeInternal, "phone backlog full")
	p.expectEOF()
	r.waitQueuedTotal(0)
	if b.c.state.closing.Load() {
		t.Fatal("the binary was closed for its phone's backlog")
	}
	if cur, live := r.srv.reg.Binary(id); cur != b.c || !live {
		t.Fatal("the binary lost its slot")
	}
}

// The socket closing (netpoll's close callback, reached through
// closeSocket) frees everything queued, the held 101 included, each frame
// counted once as DropDiscardedOnClose; OutboxBytesQueued returns to 0; the
// connection stops counting as live once; the binary's slot goes into its
// grace window. Nothing queued is written. A second close does nothing.
func TestOutboxFreedOnSocketClose(t *testing.T) {
	r := newUnitRelay(t, unitConfig())
	const id = "unit-close"
	fc, ok := r.dial(roleBinary, id, true)
	if !ok {
		t.Fatal("binary claim not decided")
	}
	const queued = 3
	for i := range queued {
		if got := pushWire(fc, wireText(payloadN(i, 200)), 0); got != pushed {
			t.Fatalf("frame %d: %s", i, resultName(got))
		}
	}
	if r.srv.Live() != 1 || r.srv.Binaries() != 1 {
		t.Fatalf("live %d, binaries %d before the close: want 1 and 1", r.srv.Live(), r.srv.Binaries())
	}
	if r.queuedTotal() == 0 {
		t.Fatal("nothing charged before the close")
	}

	fc.closeSocket()
	if got, n := fc.nc.calls.Load(), fc.nc.closes.Load(); got != 1 || n != 1 {
		t.Fatalf("netpoll Close called %d times, close callback run %d times; want 1 and 1", got, n)
	}
	if got := fc.charged(); got != 0 {
		t.Fatalf("charged %d after the close", got)
	}
	if got := r.queuedTotal(); got != 0 {
		t.Fatalf("OutboxBytesQueued %d after the close", got)
	}
	// The 101 too: the socket is gone, so it is never written.
	expectDrops(t, r, map[DropReason]uint64{DropDiscardedOnClose: queued + 1})
	expectCloses(t, r, nil) // the socket went: no close of the relay's to count
	if r.srv.Live() != 0 || r.srv.Binaries() != 0 {
		t.Fatalf("live %d, binaries %d after the close: want 0 and 0", r.srv.Live(), r.srv.Binaries())
	}
	if cur, live := r.srv.reg.Binary(id); cur != fc.c || live {
		t.Fatal("the slot is not held in grace for the departed binary")
	}
	if got := pushWire(fc, wireText(payloadN(9, 10)), noBudget); got != pushClosed {
		t.Fatalf("push after the close: %s, want pushClosed", resultName(got))
	}
	fc.expectEOF()

	fc.closeSocket()
	if got, n := fc.nc.calls.Load(), fc.nc.closes.Load(); got != 1 || n != 1 {
		t.Fatalf("after a second close: netpoll Close called %d times, close callback run %d times; want 1 and 1", got, n)
	}
	if r.srv.Live() != 0 || r.queuedTotal() != 0 {
		t.Fatalf("after a second close: live %d, OutboxBytesQueued %d", r.srv.Live(), r.queuedTotal())
	}
	expectDrops(t, r, map[DropReason]uint64{DropDiscardedOnClose: queued + 1})
}
