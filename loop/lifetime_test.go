package loop_test

// Binary lifetime (--binary-max-lifetime): every binary connection is closed
// with 1012 `binary lifetime reached` at a jittered point in [0.9, 1.1] × the
// lifetime after its claim, so the daemon redials through the balancer and
// lands on its home node. Its phones are held as for any departed binary
// (grace), and the redialled binary reclaims the slot.

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"switchboard/loop"
)

// closedAt waits for p's close frame and reports it with its arrival time.
type closedAt struct {
	code   int
	reason string
	at     time.Time
	err    error
}

func watchClose(p *peer) <-chan closedAt {
	ch := make(chan closedAt, 1)
	go func() {
		timeout := time.After(testTimeout)
		for {
			select {
			case ev, ok := <-p.events:
				if !ok {
					ch <- closedAt{err: errors.New("events ended without a close")}
					return
				}
				if ev.err == nil {
					ch <- closedAt{err: fmt.Errorf("unexpected message %q before the close", ev.data)}
					return
				}
				var ce *websocket.CloseError
				if !errors.As(ev.err, &ce) {
					ch <- closedAt{err: ev.err}
					return
				}
				ch <- closedAt{code: ce.Code, reason: ce.Text, at: time.Now()}
				return
			case <-timeout:
				ch <- closedAt{err: fmt.Errorf("still open after %s", testTimeout)}
				return
			}
		}
	}()
	return ch
}

// lifetimeWindow checks a lifetime close arrived within [0.9, 1.1] × lt of
// an upgrade that ran from before to after (the deadline is booked in
// between), allowing the wheel's tick either way and some scheduling slack.
func lifetimeWindow(t *testing.T, what string, c closedAt, before, after time.Time, lt, tick time.Duration) {
	t.Helper()
	if c.err != nil {
		t.Fatalf("%s: %v", what, c.err)
	}
	if c.code != 1012 || c.reason != "binary lifetime reached" {
		t.Fatalf("%s: closed %d %q, want 1012 %q", what, c.code, c.reason, "binary lifetime reached")
	}
	earliest := before.Add(lt*9/10 - tick)
	latest := after.Add(lt*11/10 + tick + 300*time.Millisecond) // slack for -race on a busy box
	if c.at.Before(earliest) || c.at.After(latest) {
		t.Fatalf("%s: closed %v after its upgrade began, want within [%v, %v]", what,
			c.at.Sub(before), earliest.Sub(before), latest.Sub(before))
	}
}

func TestBinaryLifetimeClosesWith1012AndBinaryReclaims(t *testing.T) {
	const (
		lt    = 300 * time.Millisecond
		tick  = lt / 10 // wheel.Tick: a tenth of the shortest deadline
		pairs = 8
	)
	r := startRelay(t, loop.Config{BinaryMaxLifetime: lt, GracePeriod: 10 * time.Second})

	type pair struct {
		id            string
		before, after time.Time
		closed        <-chan closedAt
		phones        [2]*peer
	}
	ps := make([]*pair, pairs)
	for i := range ps {
		p := &pair{id: fmt.Sprintf("life-%d", i)}
		p.before = time.Now()
		b := r.binary(t, p.id)
		p.after = time.Now()
		for j := range p.phones {
			p.phones[j] = r.phone(t, p.id)
		}
		roundTrip(t, p.phones[0], b, `{"before":"lifetime"}`)
		p.closed = watchClose(b) // after the round trip: it owns b's events from here
		ps[i] = p
	}

	// Every binary gets 1012 within its jittered window.
	for _, p := range ps {
		lifetimeWindow(t, "binary "+p.id, <-p.closed, p.before, p.after, lt, tick)
	}
	waitFor(t, "every binary in grace", func() bool { return r.Binaries() == 0 })
	if got := r.Counters().Close(loop.CloseLifetime); got != pairs {
		t.Fatalf("lifetime closes = %d, want %d", got, pairs)
	}
	// The phones were not touched by the binaries' lifetime: their slots are
	// held for the grace window.
	if got := r.Phones(); got != 2*pairs {
		t.Fatalf("phones = %d after the binaries' lifetime, want %d (held in grace)", got, 2*pairs)
	}

	// The daemon redials at once: it reclaims its slot, the held phones get
	// 4404 (as on any reclaim), and a new phone routes to it.
	for _, p := range ps {
		b := r.binary(t, p.id)
		for _, ph := range p.phones {
			ph.expectClose(t, 4404, "binary reclaimed server-id")
		}
		roundTrip(t, r.phone(t, p.id), b, `{"after":"lifetime"}`)
	}
	if got := r.Binaries(); got != pairs {
		t.Fatalf("binaries = %d after the redials, want %d", got, pairs)
	}
}

func TestBinaryLifetimeAfterTakeover(t *testing.T) {
	const (
		lt       = 600 * time.Millisecond
		takeover = 100 * time.Millisecond
		tick     = takeover / 10
	)
	r := startRelay(t, loop.Config{BinaryMaxLifetime: lt, TakeoverTimeout: takeover, GracePeriod: 10 * time.Second})
	stuck := silentPeer(t, r.Addr, "/v1/server", binaryHeaders("life-t"))
	before := time.Now()
	newcomer := r.binary(t, "life-t") // 101 only after the probe expires
	after := time.Now()
	stuck.expectClose(t, 1011, "heartbeat timeout")
	// The slot changed hands in the takeover: the newcomer's lifetime counts
	// from then, not from the stuck holder's claim.
	// The probe expires no earlier than a tick before the takeover timeout.
	lifetimeWindow(t, "newcomer", <-watchClose(newcomer), before.Add(takeover-tick), after, lt, tick)
}

func TestBinaryLifetimeOffByDefault(t *testing.T) {
	if (loop.Config{}).BinaryMaxLifetime != 0 {
		t.Fatal("zero Config has a lifetime")
	}
	cfg := loop.Config{}
	cfg.Defaults()
	if cfg.BinaryMaxLifetime != 0 {
		t.Fatalf("Defaults set a binary lifetime of %s; it must stay off", cfg.BinaryMaxLifetime)
	}
	cfg.BinaryMaxLifetime = -time.Second
	if err := cfg.Validate(); err == nil {
		t.Fatal("a negative lifetime validated")
	}
}
