package loop

import (
	"context"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// takeoverRig is a server-id held by a binary with phones, and a rival binary
// whose claim waits on the probe of the holder. The probe is decided by
// calling the Server's methods the way the holder's pong (probeAnswered),
// the wheel (probeExpired), a socket's close or Shutdown would: the
// TakeoverTimeout is far beyond the test, so nothing is decided on its own.
type takeoverRig struct {
	r        *unitRelay
	id       string
	holder   *fakeConn
	phones   []*fakeConn
	newcomer *fakeConn
}

func newTakeover(t *testing.T, phones int) *takeoverRig {
	t.Helper()
	r := newUnitRelay(t, unitConfig())
	tk := &takeoverRig{r: r, id: "unit-takeover"}
	var ok bool
	if tk.holder, ok = r.dial(roleBinary, tk.id, false); !ok {
		t.Fatal("the first claim was not decided")
	}
	tk.holder.expect101()
	for range phones {
		p, ok := r.dial(rolePhone, tk.id, false)
		if !ok || p.c.binary != tk.holder.c {
			t.Fatal("phone not attached to the holder")
		}
		p.expect101()
		tk.phones = append(tk.phones, p)
	}
	tk.newcomer = tk.claim()
	return tk
}

// claim dials a rival binary for the server-id: its claim must wait.
func (tk *takeoverRig) claim() *fakeConn {
	tk.r.t.Helper()
	fc, decided := tk.r.dial(roleBinary, tk.id, false)
	if decided {
		tk.r.t.Fatal("a rival's claim was decided while the holder is live")
	}
	return fc
}

// expectHolder requires the slot to be held live by want.
func (tk *takeoverRig) expectHolder(want *fakeConn) {
	tk.r.t.Helper()
	cur, live := tk.r.srv.reg.Binary(tk.id)
	if cur != want.c || !live {
		tk.r.t.Fatalf("slot held by %p (live %v), want %p live", cur, live, want.c)
	}
}

// expectQuiet requires fc to have been sent nothing the test has not
// read: its outbox drains, then its socket is closed from the relay's
// side, and the peer reads EOF and no frame.
func expectQuiet(fc *fakeConn) {
	fc.t.Helper()
	if fc.c.state.closing.Load() {
		fc.t.Fatalf("%v is closing", fc.nc.addr)
	}
	fc.waitIdle()
	fc.closeSocket()
	fc.expectEOF()
}

// expectNotice reads the close notice a binary is sent when its phone p
// goes without a close frame of its own (1001).
func (fc *fakeConn) expectNotice(p *fakeConn) {
	fc.t.Helper()
	fc.expectFrame(ws.OpText, []byte(`{"conn_id":"`+p.c.connID+`","close_code":1001}`))
}

func (tk *takeoverRig) counters() *Counters { return &tk.r.srv.counters }

// Each way a claim waiting on a takeover probe is decided.
func TestTakeoverDecisions(t *testing.T) {
	// The holder pongs: alive. The newcomer reads 101 then 4409, the holder
	// keeps the slot, its phones and its connection, and was sent nothing
	// but the one ping it answered.
	t.Run("holder answers", func(t *testing.T) {
		tk := newTakeover(t, 1)
		c := tk.counters()
		if got := c.TakeoverProbes.Load(); got != 1 {
			t.Fatalf("TakeoverProbes %d, want 1", got)
		}
		tk.holder.expectPing()
		tk.r.srv.probeAnswered(tk.holder.c)

		tk.newcomer.expect101()
		tk.newcomer.expectClose(codeClaimed, "server-id already claimed")
		tk.newcomer.expectEOF()
		if got := c.RegistryClaimed.Load(); got != 1 {
			t.Errorf("RegistryClaimed %d, want 1", got)
		}
		if got := c.Upgrades[EndpointServer][UpgradeReject409].Load(); got != 1 {
			t.Errorf("Upgrades[server][reject_409] %d, want 1", got)
		}
		if got := c.Upgrades[EndpointServer][UpgradeAccept].Load(); got != 1 {
			t.Errorf("Upgrades[server][accept] %d, want 1 (the holder)", got)
		}
		expectCloses(t, tk.r, map[CloseReason]uint64{CloseRegistry: 1})
		tk.expectHolder(tk.holder)

		// Nobody waits any more: the probe's deadline, were it to come,
		// takes nothing over.
		tk.r.srv.probeExpired(tk.holder.c)
		if got := c.Takeovers.Load(); got != 0 {
			t.Fatalf("Takeovers %d, want 0", got)
		}
		tk.expectHolder(tk.holder)
		expectCloses(t, tk.r, map[CloseReason]uint64{CloseRegistry: 1})
		expectQuiet(tk.phones[0])
		tk.holder.expectNotice(tk.phones[0])
		expectQuiet(tk.holder)
	})

	// No pong in time: the newcomer reads its 101 and holds the slot; the
	// holder is closed 1011 `heartbeat timeout` after its probe's ping,
	// its phones 4404 `binary reclaimed server-id`.
	t.Run("holder silent", func(t *testing.T) {
		tk := newTakeover(t, 2)
		c := tk.counters()
		tk.holder.expectPing()
		tk.r.srv.probeExpired(tk.holder.c)

		tk.newcomer.expect101()
		tk.expectHolder(tk.newcomer)
		tk.holder.expectClose(codeInternal, "heartbeat timeout")
		tk.holder.expectEOF()
		for _, p := range tk.phones {
			p.expectClose(codeNoServer, "binary reclaimed server-id")
			p.expectEOF()
		}
		if got := c.Takeovers.Load(); got != 1 {
			t.Errorf("Takeovers %d, want 1", got)
		}
		if got := c.Upgrades[EndpointServer][UpgradeAccept].Load(); got != 2 {
			t.Errorf("Upgrades[server][accept] %d, want 2", got)
		}
		if got := c.RegistryClaimed.Load(); got != 0 {
			t.Errorf("RegistryClaimed %d, want 0", got)
		}
		expectCloses(t, tk.r, map[CloseReason]uint64{CloseTakenOver: 1, CloseReclaimed: 2})
		if got := tk.r.srv.Phones(); got != 0 {
			t.Errorf("%d phones still attached", got)
		}
		expectQuiet(tk.newcomer)
	})

	// Two rivals wait on one probe (one ping); the holder stays silent.
	// The first takes the slot, the second reads 101 then 4409: the winner
	// has just proved itself alive by connecting.
	t.Run("two newcomers", func(t *testing.T) {
		tk := newTakeover(t, 0)
		second := tk.claim()
		c := tk.counters()
		if got := c.TakeoverProbes.Load(); got != 2 {
			t.Fatalf("TakeoverProbes %d, want 2", got)
		}
		tk.holder.expectPing()
		tk.r.srv.probeExpired(tk.holder.c)

		tk.newcomer.expect101()
		second.expect101()
		second.expectClose(codeClaimed, "server-id already claimed")
		second.expectEOF()
		tk.holder.expectClose(codeInternal, "heartbeat timeout") // and no second ping before it
		tk.holder.expectEOF()
		tk.expectHolder(tk.newcomer)
		if got := c.Takeovers.Load(); got != 1 {
			t.Errorf("Takeovers %d, want 1", got)
		}
		if got := c.RegistryClaimed.Load(); got != 1 {
			t.Errorf("RegistryClaimed %d, want 1", got)
		}
		if got := c.Upgrades[EndpointServer][UpgradeReject409].Load(); got != 1 {
			t.Errorf("Upgrades[server][reject_409] %d, want 1", got)
		}
		expectCloses(t, tk.r, map[CloseReason]uint64{CloseTakenOver: 1, CloseRegistry: 1})
		expectQuiet(tk.newcomer)
	})

	// The holder's socket goes while it is probed: its release hands the
	// slot to the newcomer at once, its phones are closed 4404, and the
	// probe's deadline, when it comes, finds nothing to do, even with a
	// new rival waiting on the new holder: that claim belongs to the new
	// holder's own probe.
	t.Run("holder leaves", func(t *testing.T) {
		tk := newTakeover(t, 1)
		c := tk.counters()
		tk.holder.expectPing()
		tk.holder.closeSocket()

		tk.newcomer.expect101()
		tk.expectHolder(tk.newcomer)
		tk.holder.expectEOF()
		tk.phones[0].expectClose(codeNoServer, "binary reclaimed server-id")
		tk.phones[0].expectEOF()
		if got := c.Takeovers.Load(); got != 1 {
			t.Errorf("Takeovers %d, want 1", got)
		}

		rival := tk.claim() // waits on the new holder, which is pinged
		tk.newcomer.expectPing()
		tk.r.srv.probeExpired(tk.holder.c)
		if got := c.Takeovers.Load(); got != 1 {
			t.Errorf("Takeovers %d after the stale probe deadline, want 1", got)
		}
		tk.expectHolder(tk.newcomer)
		expectCloses(t, tk.r, map[CloseReason]uint64{CloseReclaimed: 1})

		tk.r.srv.probeAnswered(tk.newcomer.c)
		rival.expect101()
		rival.expectClose(codeClaimed, "server-id already claimed")
		rival.expectEOF()
		tk.expectHolder(tk.newcomer)
		expectCloses(t, tk.r, map[CloseReason]uint64{CloseReclaimed: 1, CloseRegistry: 1})
		expectQuiet(tk.newcomer)
	})

	// The newcomer's socket goes while it waits: it leaves the queue (its
	// held 101 never written, and discarded), and the probe's deadline
	// then takes nothing over: the holder keeps the slot and is not closed.
	t.Run("newcomer leaves", func(t *testing.T) {
		tk := newTakeover(t, 1)
		c := tk.counters()
		tk.holder.expectPing()
		live := tk.r.srv.Live()
		tk.newcomer.closeSocket()
		tk.newcomer.expectEOF()
		if got := tk.r.srv.Live(); got != live-1 {
			t.Fatalf("live %d after the newcomer left, want %d", got, live-1)
		}
		expectDrops(t, tk.r, map[DropReason]uint64{DropDiscardedOnClose: 1})

		tk.r.srv.probeExpired(tk.holder.c)
		if got := c.Takeovers.Load(); got != 0 {
			t.Errorf("Takeovers %d, want 0", got)
		}
		tk.expectHolder(tk.holder)
		if got := tk.r.srv.Phones(); got != 1 {
			t.Errorf("%d phones attached, want 1", got)
		}
		expectCloses(t, tk.r, nil)
		expectQuiet(tk.phones[0])
		tk.holder.expectNotice(tk.phones[0])
		expectQuiet(tk.holder)
	})

	// Shutdown while the claim waits: Shutdown takes it off the queue and
	// answers it 101 then 1001 `shutting down` (not 4409: the daemon would
	// give up rather than redial another node); the holder and its phones
	// get 1001 too. No probe outcome answers the newcomer after that.
	t.Run("shutdown", func(t *testing.T) {
		tk := newTakeover(t, 1)
		c := tk.counters()
		tk.holder.expectPing()
		ctx, cancel := context.WithTimeout(context.Background(), unitWait)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- tk.r.srv.Shutdown(ctx) }()

		tk.newcomer.expect101()
		tk.newcomer.expectClose(codeGoingAway, "shutting down")
		tk.newcomer.expectEOF()
		tk.holder.expectClose(codeGoingAway, "shutting down")
		tk.holder.expectEOF()
		tk.phones[0].expectClose(codeGoingAway, "shutting down")
		tk.phones[0].expectEOF()
		if got := c.Upgrades[EndpointServer][UpgradeRejectCapacity].Load(); got != 1 {
			t.Errorf("Upgrades[server][reject_capacity] %d, want 1", got)
		}

		// The queue was taken: the probe's deadline hands nothing over.
		tk.r.srv.probeExpired(tk.holder.c)
		if got := c.Takeovers.Load(); got != 0 {
			t.Errorf("Takeovers %d, want 0", got)
		}
		if got := c.RegistryClaimed.Load(); got != 0 {
			t.Errorf("RegistryClaimed %d, want 0", got)
		}
		expectCloses(t, tk.r, map[CloseReason]uint64{CloseShutdown: 3})

		// The peers' answers (here: the relay's side closing, as at the
		// linger's end) let the drain finish before its deadline.
		for _, fc := range []*fakeConn{tk.newcomer, tk.holder, tk.phones[0]} {
			fc.closeSocket()
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		case <-time.After(2 * unitWait):
			t.Fatal("Shutdown did not return")
		}
		if got := tk.r.srv.Live(); got != 0 {
			t.Fatalf("live %d after Shutdown", got)
		}
	})
}
