package loop_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"switchboard/internal/wsclient"
	"switchboard/loop"
)

// pauseAt stops the relay's goroutine at the first call of hook point that
// match accepts (see loop.SetTestHook) until resume is called: reached is
// closed once it is there. Later calls pass through, and the pause never
// outlasts testTimeout or the test.
func pauseAt(t *testing.T, point string, match func(serverID, remote string) bool) (reached <-chan struct{}, resume func()) {
	t.Helper()
	at, release := make(chan struct{}), make(chan struct{})
	var once, resumeOnce sync.Once
	resume = func() { resumeOnce.Do(func() { close(release) }) }
	loop.SetTestHook(t, func(p, serverID, remote string) {
		if p != point || !match(serverID, remote) {
			return
		}
		first := false
		once.Do(func() { first = true })
		if !first {
			return
		}
		close(at)
		select {
		case <-release:
		case <-time.After(testTimeout):
		}
	})
	t.Cleanup(resume)
	return at, resume
}

func onServer(id string) func(string, string) bool {
	return func(serverID, _ string) bool { return serverID == id }
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(testTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// dialAsync dials in the background: a binary queued on a probe gets its
// 101 only when the probe is decided.
func dialAsync(t *testing.T, addr, path string, h http.Header) <-chan *peer {
	done := make(chan *peer, 1)
	go func() {
		p, _, err := dial(t, addr, path, h)
		if err != nil {
			t.Errorf("dial %s: %v", path, err)
		}
		done <- p
	}()
	return done
}

func await(t *testing.T, ch <-chan *peer) *peer {
	t.Helper()
	select {
	case p := <-ch:
		if p == nil {
			t.FailNow()
		}
		return p
	case <-time.After(testTimeout + time.Second):
		t.Fatal("dial did not return")
	}
	return nil
}

// rawClaim sends a binary's upgrade request without reading the answer: a
// claim queued on a probe gets no 101 until the probe is decided.
func rawClaim(t *testing.T, addr, serverID string) *rawClient {
	rc := rawDial(t, addr)
	rc.write([]byte(requestHead("/v1/server", withUpgrade(rawBinaryLines(serverID))...)))
	return rc
}

// A newcomer that leaves while its claim waits on a probe (close frame or
// TCP drop) is taken off the queue: it gets its answer at once, the probe
// has nobody to give the slot to, and the next claimant takes over as
// usual. Before the queue moved to the registry, the newcomer leaving by
// close frame stayed queued, won the takeover while closing, and left a dead
// connection holding the server-id: the next claimant waited forever.
func TestTakeoverNewcomerLeavesWhileQueued(t *testing.T) {
	for _, how := range []string{"close frame", "tcp drop"} {
		t.Run(how, func(t *testing.T) {
			r := startRelay(t, loop.Config{TakeoverTimeout: 200 * time.Millisecond, GracePeriod: 10 * time.Second})
			stuck := silentPeer(t, r.Addr, "/v1/server", binaryHeaders("tk-leave"))
			sp := r.phone(t, "tk-leave")
			rc := rawClaim(t, r.Addr, "tk-leave")
			waitFor(t, "probe started", func() bool { return r.Counters().TakeoverProbes.Load() == 1 })
			if how == "close frame" {
				rc.write(wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(1000, "")))
				// Answered at once, not when the probe ends: 101, then the echo.
				if resp, _ := rc.response(); resp.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("status %d", resp.StatusCode)
				}
				rc.expectClose(1000, "")
			} else {
				_ = rc.Conn.Close()
			}
			waitFor(t, "newcomer gone", func() bool { return r.Live() == 2 })

			next := await(t, dialAsync(t, r.Addr, "/v1/server", binaryHeaders("tk-leave")))
			stuck.expectClose(t, 1011, "heartbeat timeout")
			sp.expectClose(t, 4404, "binary reclaimed server-id")
			roundTrip(t, r.phone(t, "tk-leave"), next, `"next holder"`)
			if n := r.Counters().Takeovers.Load(); n != 1 {
				t.Fatalf("%d takeovers, want 1", n)
			}
		})
	}
}

// The newcomer is leaving (its read side saw its close frame) but the probe
// expires before its departure reaches the registry: it wins the slot while
// closing. Its departure then releases the slot it holds, so the server-id
// goes into grace and the next claimant reclaims it at once.
func TestTakeoverWinnerAlreadyLeaving(t *testing.T) {
	r := startRelay(t, loop.Config{TakeoverTimeout: 200 * time.Millisecond, GracePeriod: 10 * time.Second})
	stuck := silentPeer(t, r.Addr, "/v1/server", binaryHeaders("tk-won"))
	sp := r.phone(t, "tk-won")
	rc := rawClaim(t, r.Addr, "tk-won")
	local := rc.Conn.LocalAddr().String()
	leaving, resume := pauseAt(t, "leaving", func(_, remote string) bool { return remote == local })
	waitFor(t, "probe started", func() bool { return r.Counters().TakeoverProbes.Load() == 1 })
	rc.write(wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(1000, "")))
	waitClosed(t, leaving, "newcomer leaving")

	// The probe expires meanwhile: the leaving newcomer wins.
	stuck.expectClose(t, 1011, "heartbeat timeout")
	sp.expectClose(t, 4404, "binary reclaimed server-id")
	if resp, _ := rc.response(); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if f := rc.mustFrame(); f.Op != wsclient.OpClose || string(f.Payload) != string(wsclient.CloseBody(1000, "")) {
		t.Fatalf("got op %#x %q, want the echo of its close", f.Op, f.Payload)
	}
	resume()
	rc.expectEOF()
	waitFor(t, "winner's slot released into grace", func() bool { return r.Binaries() == 0 })

	next := r.binary(t, "tk-won") // a reclaim: no probe
	roundTrip(t, r.phone(t, "tk-won"), next, `"reclaimed"`)
	if n := r.Counters().TakeoverProbes.Load(); n != 1 {
		t.Fatalf("%d probes, want 1: the next claimant waited on a dead holder", n)
	}
}

// The holder's departure and its probe's expiry race. Whichever the registry
// sees first decides, and every queued newcomer is answered exactly once:
// the first gets the slot, the second 4409. (loop/takeover.go used to take
// the queue, then fail the takeover and refuse no one: the newcomers kept a
// held 101 with no timer.)
func TestTakeoverHolderLeavesAsProbeExpires(t *testing.T) {
	for _, first := range []string{"departure", "expiry"} {
		t.Run(first+" first", func(t *testing.T) {
			r := startRelay(t, loop.Config{TakeoverTimeout: 200 * time.Millisecond, GracePeriod: 10 * time.Second})
			stuck := silentPeer(t, r.Addr, "/v1/server", binaryHeaders("tk-race"))
			sp := r.phone(t, "tk-race")
			var reached <-chan struct{}
			var resume func()
			if first == "departure" {
				// Hold the wheel as the probe expires; the holder leaves meanwhile.
				reached, resume = pauseAt(t, "probe-expired", onServer("tk-race"))
			} else {
				// Hold the holder's departure; the probe expires meanwhile.
				local := stuck.conn.LocalAddr().String()
				reached, resume = pauseAt(t, "leaving", func(_, remote string) bool { return remote == local })
			}
			n1 := dialAsync(t, r.Addr, "/v1/server", binaryHeaders("tk-race"))
			waitFor(t, "first probe", func() bool { return r.Counters().TakeoverProbes.Load() == 1 })
			n2 := dialAsync(t, r.Addr, "/v1/server", binaryHeaders("tk-race"))
			waitFor(t, "second queued", func() bool { return r.Counters().TakeoverProbes.Load() == 2 })

			if first == "departure" {
				waitClosed(t, reached, "probe expiry")
				_ = stuck.conn.UnderlyingConn().Close()
			} else {
				msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
				if err := stuck.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
					t.Fatal(err)
				}
				waitClosed(t, reached, "holder leaving")
			}
			w1, w2 := await(t, n1), await(t, n2) // decided while the other side is held
			w2.expectClose(t, 4409, "server-id already claimed")
			sp.expectClose(t, 4404, "binary reclaimed server-id")
			resume()
			roundTrip(t, r.phone(t, "tk-race"), w1, `"first queued wins"`)
			if n := r.Counters().Takeovers.Load(); n != 1 {
				t.Fatalf("%d takeovers, want 1", n)
			}
		})
	}
}

// A newcomer's claim is queued while the holder looks live, and the holder
// is gone before the probe starts. The holder's departure hands the newcomer
// the slot at once. (loop/takeover.go used to record the newcomer on a
// probe of the departed holder: never resolved, its entry leaked, and the
// newcomer kept a held 101.)
func TestClaimQueuedBehindDepartingHolder(t *testing.T) {
	r := startRelay(t, loop.Config{TakeoverTimeout: time.Minute, GracePeriod: 10 * time.Second})
	holder := silentPeer(t, r.Addr, "/v1/server", binaryHeaders("tk-gone"))
	hp := r.phone(t, "tk-gone")
	queued, resume := pauseAt(t, "claim-queued", onServer("tk-gone"))
	n1 := dialAsync(t, r.Addr, "/v1/server", binaryHeaders("tk-gone"))
	waitClosed(t, queued, "claim queued")
	_ = holder.conn.UnderlyingConn().Close()
	// Decided by the departure alone, long before the probe could end.
	w := await(t, n1)
	hp.expectClose(t, 4404, "binary reclaimed server-id")
	resume()
	roundTrip(t, r.phone(t, "tk-gone"), w, `"handed over"`)
	if n := r.Counters().Takeovers.Load(); n != 1 {
		t.Fatalf("%d takeovers, want 1", n)
	}
}

// shutdownAsync runs Shutdown and reports how long it took.
func shutdownAsync(srv *loop.Server) (start time.Time, done <-chan time.Duration) {
	ch := make(chan time.Duration, 1)
	start = time.Now()
	go func() {
		_ = srv.Shutdown(context.Background())
		ch <- time.Since(start)
	}()
	return start, ch
}

func drained(t *testing.T, done <-chan time.Duration, within time.Duration) {
	t.Helper()
	select {
	case took := <-done:
		if took >= within {
			t.Fatalf("Shutdown took %v, want under %v", took, within)
		}
	case <-time.After(testTimeout):
		t.Fatal("Shutdown did not return")
	}
}

// An upgrade that passed the draining check before Shutdown took its
// registry snapshot, and registered after it, still gets 1001, and the
// drain does not wait for it until its deadline.
func TestShutdownClosesUpgradeAfterSnapshot(t *testing.T) {
	const drain = 5 * time.Second
	for _, path := range []string{"/v1/server", "/v1/client"} {
		t.Run(path, func(t *testing.T) {
			r := startRelay(t, loop.Config{DrainTimeout: drain})
			early := r.binary(t, "sd-early")
			h := binaryHeaders("sd-late")
			if path == "/v1/client" {
				r.binary(t, "sd-late")
				waitFor(t, "binary", func() bool { return r.Binaries() == 2 })
				h = phoneHeaders("sd-late")
			}
			admitted, resume := pauseAt(t, "admitted", onServer("sd-late"))
			late := dialAsync(t, r.Addr, path, h)
			waitClosed(t, admitted, "late upgrade past the draining check")
			_, done := shutdownAsync(r.Server)
			early.expectClose(t, 1001, "shutting down") // the snapshot is taken
			resume()
			await(t, late).expectClose(t, 1001, "shutting down")
			drained(t, done, drain)
		})
	}
}

// Newcomers whose claim waits on a takeover probe get 101 then 1001 when
// the relay drains, instead of holding the drain until its deadline; one
// that queues after Shutdown emptied the queues answers itself.
func TestShutdownAnswersQueuedClaims(t *testing.T) {
	const drain = 5 * time.Second
	t.Run("queued before", func(t *testing.T) {
		r := startRelay(t, loop.Config{DrainTimeout: drain, TakeoverTimeout: time.Minute})
		stuck := silentPeer(t, r.Addr, "/v1/server", binaryHeaders("sd-probe"))
		n1 := dialAsync(t, r.Addr, "/v1/server", binaryHeaders("sd-probe"))
		waitFor(t, "probe", func() bool { return r.Counters().TakeoverProbes.Load() == 1 })
		n2 := dialAsync(t, r.Addr, "/v1/server", binaryHeaders("sd-probe"))
		waitFor(t, "second queued", func() bool { return r.Counters().TakeoverProbes.Load() == 2 })
		_, done := shutdownAsync(r.Server)
		stuck.expectClose(t, 1001, "shutting down")
		await(t, n1).expectClose(t, 1001, "shutting down")
		await(t, n2).expectClose(t, 1001, "shutting down")
		drained(t, done, drain)
		if n := r.Counters().Upgrades[0][loop.UpgradeReject409].Load(); n != 0 {
			t.Fatalf("%d 4409s during the drain", n)
		}
	})
	t.Run("queued after", func(t *testing.T) {
		// The holder does not answer the close: it stays in the registry for
		// its close linger, so the late claim really queues behind it.
		const linger = 3 * time.Second
		r := startRelay(t, loop.Config{DrainTimeout: drain, TakeoverTimeout: time.Minute, CloseLinger: linger})
		holder := rawUpgrade(t, r.Addr, "/v1/server", rawBinaryLines("sd-after"), nil)
		admitted, resume := pauseAt(t, "admitted", func(serverID, remote string) bool {
			return serverID == "sd-after" && remote != holder.Conn.LocalAddr().String()
		})
		late := dialAsync(t, r.Addr, "/v1/server", binaryHeaders("sd-after"))
		waitClosed(t, admitted, "late claim past the draining check")
		start, done := shutdownAsync(r.Server)
		holder.expectClose(1001, "shutting down") // closed, but lingering
		resume()
		await(t, late).expectClose(t, 1001, "shutting down")
		if took := time.Since(start); took >= linger {
			t.Fatalf("late claim answered after %v: by the holder's linger, not by itself", took)
		}
		if n := r.Counters().TakeoverProbes.Load(); n != 1 {
			t.Fatalf("%d probes: the late claim did not queue", n)
		}
		drained(t, done, drain)
	})
}
