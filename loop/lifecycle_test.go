package loop_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"switchboard/internal/relaytest"
	"switchboard/loop"
)

// silentPeer dials like mustDial but never answers pings: it models a peer
// whose process is stuck while its socket stays open.
func silentPeer(t testing.TB, addr, path string, h http.Header) *peer {
	t.Helper()
	c, _, err := dialer.Dial("ws://"+addr+path, h)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	c.SetPingHandler(func(string) error { return nil })
	return newPeer(t, c)
}

// countingPeer answers pings and counts them.
func countingPeer(t testing.TB, addr, path string, h http.Header, pings *atomic.Int64) *peer {
	t.Helper()
	c, _, err := dialer.Dial("ws://"+addr+path, h)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	c.SetPingHandler(func(data string) error {
		pings.Add(1)
		return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	return newPeer(t, c)
}

func roundTrip(t testing.TB, phone, binary *peer, msg string) {
	t.Helper()
	phone.send(t, msg)
	env := string(binary.next(t))
	if !strings.HasSuffix(env, `,"frame":`+msg+`}`) {
		t.Fatalf("binary got %s", env)
	}
	connID := env[len(`{"conn_id":"`):strings.Index(env, `","frame"`)]
	binary.send(t, fmt.Sprintf(`{"conn_id":%q,"frame":%s}`, connID, msg))
	if got := string(phone.next(t)); got != msg {
		t.Fatalf("phone got %s", got)
	}
}

func TestHeartbeatKeepsAnsweringPeersUp(t *testing.T) {
	r := startRelay(t, loop.Config{HeartbeatInterval: 50 * time.Millisecond, PongTimeout: 100 * time.Millisecond})
	var bPings, pPings atomic.Int64
	b := countingPeer(t, r.Addr, "/v1/server", binaryHeaders("hb"), &bPings)
	p := countingPeer(t, r.Addr, "/v1/client", phoneHeaders("hb"), &pPings)
	waitFor(t, "ten pings to each peer", func() bool { return bPings.Load() >= 10 && pPings.Load() >= 10 })
	roundTrip(t, p, b, `{"still":"here"}`)
	if n := r.Counters().Close(loop.CloseHeartbeat); n != 0 {
		t.Fatalf("%d heartbeat closes for peers that answer", n)
	}
}

func TestHeartbeatClosesSilentPeerInTime(t *testing.T) {
	const interval, timeout = 100 * time.Millisecond, 150 * time.Millisecond
	r := startRelay(t, loop.Config{HeartbeatInterval: interval, PongTimeout: timeout})
	b := r.binary(t, "hb2")
	start := time.Now()
	silent := silentPeer(t, r.Addr, "/v1/client", phoneHeaders("hb2"))
	silent.expectClose(t, 1011, "heartbeat timeout")
	took := time.Since(start)
	// First ping lands in the last quarter of the interval; the pong is due
	// timeout later; the wheel may fire up to a tick (interval/10) late.
	if lo, hi := interval*3/4+timeout, interval+timeout+interval; took < lo || took > 3*hi {
		t.Fatalf("closed after %v, want within [%v, %v]", took, lo, 3*hi)
	}
	// Its binary hears about it.
	if got := string(b.next(t)); !strings.HasSuffix(got, `","close_code":1001}`) {
		t.Fatalf("binary got %s", got)
	}
}

func TestGraceReclaimAndExpiry(t *testing.T) {
	r := startRelay(t, loop.Config{GracePeriod: 300 * time.Millisecond})
	b1 := r.binary(t, "g1")
	p1 := r.phone(t, "g1")
	roundTrip(t, p1, b1, `1`)

	// The binary drops: its slot and phone are held, the phone is not told.
	_ = b1.conn.UnderlyingConn().Close()
	waitFor(t, "binary in grace", func() bool { return r.Binaries() == 0 })
	if r.Phones() != 1 {
		t.Fatalf("phones = %d during grace, want 1", r.Phones())
	}
	// A new phone may still register during grace.
	p2 := r.phone(t, "g1")
	waitFor(t, "second phone", func() bool { return r.Phones() == 2 })

	// The binary comes back: every phone of the old slot gets 4404.
	b2 := r.binary(t, "g1")
	p1.expectClose(t, 4404, "binary reclaimed server-id")
	p2.expectClose(t, 4404, "binary reclaimed server-id")
	p3 := r.phone(t, "g1")
	roundTrip(t, p3, b2, `"reclaimed"`)

	// No reclaim this time: the phones are closed 1000 when grace ends.
	_ = b2.conn.UnderlyingConn().Close()
	start := time.Now()
	p3.expectClose(t, 1000, "")
	if took := time.Since(start); took < 250*time.Millisecond || took > 3*time.Second {
		t.Fatalf("grace ended after %v, want ~300ms", took)
	}
	waitFor(t, "slot dropped", func() bool { return r.Phones() == 0 && r.Counters().GraceExpiries.Load() == 1 })
	_, resp, err := dial(t, r.Addr, "/v1/client", phoneHeaders("g1"))
	if err != nil {
		t.Fatalf("dial after expiry: %v %v", err, resp)
	}
}

func TestPhoneSendingDuringGraceIsClosed(t *testing.T) {
	r := startRelay(t, loop.Config{GracePeriod: 10 * time.Second})
	b := r.binary(t, "g2")
	p := r.phone(t, "g2")
	_ = b.conn.UnderlyingConn().Close()
	waitFor(t, "binary in grace", func() bool { return r.Binaries() == 0 })
	p.send(t, `{"anyone":"there"}`)
	p.expectClose(t, 1000, "")
}

func TestStaleGraceTimerNeverEvictsNewHolder(t *testing.T) {
	// Reclaim races the expiry: whichever wins, the new holder must keep its
	// slot and route.
	for i := 0; i < 20; i++ {
		r := startRelay(t, loop.Config{GracePeriod: 20 * time.Millisecond})
		id := fmt.Sprintf("race-%d", i)
		b1 := r.binary(t, id)
		_ = b1.conn.UnderlyingConn().Close()
		waitFor(t, "grace", func() bool { return r.Binaries() == 0 })
		time.Sleep(time.Duration(i) * time.Millisecond) // sweep the reclaim across the expiry
		b2 := r.binary(t, id)
		p := r.phone(t, id)
		roundTrip(t, p, b2, `{"i":`+fmt.Sprint(i)+`}`)
		if r.Binaries() != 1 {
			t.Fatalf("round %d: binaries = %d", i, r.Binaries())
		}
	}
}

func TestTakeoverProbe(t *testing.T) {
	r := startRelay(t, loop.Config{TakeoverTimeout: 300 * time.Millisecond})

	// A live holder answers the probe: the newcomer gets 4409.
	holder := r.binary(t, "t1")
	p := r.phone(t, "t1")
	dup, _, err := dial(t, r.Addr, "/v1/server", binaryHeaders("t1"))
	if err != nil {
		t.Fatal(err)
	}
	dup.expectClose(t, 4409, "server-id already claimed")
	roundTrip(t, p, holder, `"holder kept"`)

	// A stuck holder does not: the newcomer takes over after the probe.
	stuck := silentPeer(t, r.Addr, "/v1/server", binaryHeaders("t2"))
	sp := r.phone(t, "t2")
	other := r.binary(t, "t3")
	op := r.phone(t, "t3")
	done := make(chan *peer, 1)
	start := time.Now()
	go func() {
		c, _, err := dialer.Dial("ws://"+r.Addr+"/v1/server", binaryHeaders("t2"))
		if err != nil {
			t.Error(err)
			done <- nil
			return
		}
		done <- newPeer(t, c)
	}()
	// While the probe waits, other server-ids and the holder's phone route.
	waitFor(t, "probe started", func() bool { return r.Counters().TakeoverProbes.Load() == 2 })
	roundTrip(t, op, other, `"unaffected"`)
	newcomer := <-done
	if newcomer == nil {
		t.FailNow()
	}
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Fatalf("took over after %v, before the probe timeout", took)
	}
	stuck.expectClose(t, 1011, "heartbeat timeout")
	sp.expectClose(t, 4404, "binary reclaimed server-id")
	np := r.phone(t, "t2")
	roundTrip(t, np, newcomer, `"new holder"`)
}

func TestHandshakeTimeoutDropsHalfRequest(t *testing.T) {
	r := startRelay(t, loop.Config{HandshakeTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Write([]byte("GET /v1/client HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	n, err := c.Read(make([]byte, 64))
	if n != 0 || err == nil {
		t.Fatalf("read %d bytes, err %v: want the connection dropped without an answer", n, err)
	}
	if took := time.Since(start); took < 150*time.Millisecond || took > 2*time.Second {
		t.Fatalf("dropped after %v, want ~200ms", took)
	}
	waitFor(t, "counted", func() bool { return r.Counters().Close(loop.CloseHandshakeTimeout) == 1 })
}

func TestMessageReadTimeout(t *testing.T) {
	r := startRelay(t, loop.Config{MessageReadTimeout: 200 * time.Millisecond})
	b := r.binary(t, "mr")
	p := r.phone(t, "mr")
	// Idle time between messages is not bounded: wait past the timeout.
	roundTrip(t, p, b, `1`)
	time.Sleep(300 * time.Millisecond)
	roundTrip(t, p, b, `2`)
	// Half a frame: header says 100 bytes, 10 arrive.
	raw := p.conn.UnderlyingConn()
	frame := []byte{0x81, 0x80 | 100, 1, 2, 3, 4}
	frame = append(frame, make([]byte, 10)...)
	if _, err := raw.Write(frame); err != nil {
		t.Fatal(err)
	}
	p.expectClose(t, 1008, "message read timeout")
	if got := string(b.next(t)); !strings.HasSuffix(got, `"close_code":1001}`) {
		t.Fatalf("binary got %s", got)
	}
}

func TestShutdownSends1001AndDrains(t *testing.T) {
	srv := relaytest.Start(t, loop.Config{DrainTimeout: 5 * time.Second})
	addr := srv.Addr
	var peers []*peer
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("sd-%d", i)
		peers = append(peers, mustDial(t, addr, "/v1/server", binaryHeaders(id)))
		for j := 0; j < 5; j++ {
			peers = append(peers, mustDial(t, addr, "/v1/client", phoneHeaders(id)))
		}
	}
	waitFor(t, "all registered", func() bool { return srv.Phones() == 100 })
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(context.Background()) }()
	for _, p := range peers {
		p.expectClose(t, 1001, "shutting down")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Shutdown did not return after every peer closed")
	}
	if n := srv.Counters().Close(loop.CloseShutdown); n != 120 {
		t.Fatalf("%d shutdown closes, want 120", n)
	}
}
