package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"

	"switchboard/internal/wsclient"
)

func TestBucketLayout(t *testing.T) {
	prevHi := uint64(0)
	for i := range histBuckets {
		lo, hi := bucketRange(i)
		if i > 0 && lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d,%d]: bucketOf gives %d, %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		if lo >= 2*histSub && float64(hi-lo+1)/float64(lo) > 1.0/histSub+1e-9 {
			t.Fatalf("bucket %d [%d,%d] wider than 1/%d of its value", i, lo, hi, histSub)
		}
		prevHi = hi
	}
	if bucketOf(^uint64(0)) != histBuckets-1 {
		t.Fatal("huge values must land in the last bucket")
	}
}

func TestHistogramQuantilesAndMerge(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var all, a, b Histogram
	var raw []time.Duration
	for i := range 100000 {
		d := time.Duration(r.ExpFloat64() * float64(200*time.Microsecond))
		raw = append(raw, d)
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	// Merging is exact: the same counts as recording everything in one.
	var m Histogram
	m.Merge(&a)
	m.Merge(&b)
	if !slices.Equal(m.Counts, all.Counts) || m.N != all.N || m.Sum != all.Sum || m.Min != all.Min || m.Max != all.Max {
		t.Fatal("merged histogram differs from the combined one")
	}
	// And survives the JSON trip between processes.
	js, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var back Histogram
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.Counts, a.Counts) || back.N != a.N || back.Min != a.Min {
		t.Fatal("JSON round trip changed the histogram")
	}
	slices.Sort(raw)
	for _, q := range []float64{0.5, 0.99, 0.999} {
		exact := raw[int(q*float64(len(raw)))-1]
		got := m.Quantile(q)
		if diff := float64(got-exact) / float64(exact); diff > 0.02 || diff < -0.02 {
			t.Errorf("q%.3f: %v, exact %v", q, got, exact)
		}
	}
}

func TestRecorderShards(t *testing.T) {
	r := newRecorder(4)
	var want Histogram
	for i := range 1000 {
		d := time.Duration(i) * time.Microsecond
		r.record(int64(i), d)
		want.Record(d)
	}
	got := r.snapshot()
	if !slices.Equal(got.Counts, want.Counts) || got.N != want.N || got.Min != want.Min || got.Max != want.Max || got.Sum != want.Sum {
		t.Fatalf("recorder snapshot %+v differs", got)
	}
}

func TestPayload(t *testing.T) {
	for _, size := range []int{minPayload, 256, 1000, 70000} {
		for _, tc := range []struct {
			id  int64
			seq uint64
		}{{0, 0}, {7, 1}, {123456789, 98765}, {1<<63 - 1, ^uint64(0)}} {
			b := appendPayload(nil, tc.id, tc.seq, size)
			if len(b) != size {
				t.Fatalf("size %d: got %d bytes", size, len(b))
			}
			if !json.Valid(b) {
				t.Fatalf("not JSON: %s", b)
			}
			id, seq, ok := parsePayload(b)
			if !ok || id != tc.id || seq != tc.seq {
				t.Fatalf("parse %s: %d %d %v", b[:40], id, seq, ok)
			}
			v := verifier{id: tc.id, size: size}
			if s, kind, re := v.check(b); kind != "" || re || s != tc.seq {
				t.Fatalf("check: %d %q %v", s, kind, re)
			}
		}
	}
	v := verifier{id: 5, size: 128}
	good := appendPayload(nil, 5, 9, 128)
	// Another phone's frame.
	if _, kind, _ := v.check(appendPayload(nil, 6, 9, 128)); kind != "wrong_phone" {
		t.Errorf("other phone: %q", kind)
	}
	// A flipped padding byte.
	bad := slices.Clone(good)
	bad[20] ^= 1
	if _, kind, _ := v.check(bad); kind != "content_mismatch" {
		t.Errorf("corrupted: %q", kind)
	}
	// Truncated.
	if _, kind, _ := v.check(good[:60]); kind != "malformed_reply" {
		t.Errorf("truncated: %q", kind)
	}
	// Re-encoded with whitespace and another key order: equal, but slow path.
	var f map[string]any
	_ = json.Unmarshal(good, &f)
	re, _ := json.MarshalIndent(map[string]any{"s": 9, "p": f["p"], "c": 5}, "", " ")
	if s, kind, reenc := v.check(re); kind != "" || !reenc || s != 9 {
		t.Errorf("re-encoded: %d %q %v", s, kind, reenc)
	}
}

func TestPayloadAllocs(t *testing.T) {
	v := verifier{id: 42, size: 256}
	buf := appendPayload(nil, 42, 1, 256)
	v.check(buf)
	n := testing.AllocsPerRun(100, func() {
		buf = appendPayload(buf[:0], 42, 12345, 256)
		if _, kind, _ := v.check(buf); kind != "" {
			t.Fatal(kind)
		}
	})
	if n != 0 {
		t.Errorf("%v allocations per frame", n)
	}
}

func TestCloseNotice(t *testing.T) {
	for s, want := range map[string]bool{
		`{"conn_id":"client-x-0011aabb","close_code":1000}`: true,
		`{"conn_id":"client-x-0011aabb","frame":{"c":1}}`:   false,
		`{"conn_id":"client-x`:                              false,
		`[]`:                                                false,
	} {
		if isCloseNotice([]byte(s)) != want {
			t.Errorf("%s: want %v", s, want)
		}
	}
}

func TestShares(t *testing.T) {
	c := Config{Phones: 103, Procs: 4, PhonesPerBinary: 16, ConnectRate: 1000}
	total, next := 0, 0
	for i := range 4 {
		s := shareOf(&c, i)
		if s.offset != next || s.phones < 25 || s.phones > 26 || s.rate != 250 {
			t.Fatalf("share %d: %+v", i, s)
		}
		if s.binaries != binariesFor(s.phones, 16) {
			t.Fatalf("share %d binaries %d", i, s.binaries)
		}
		total += s.phones
		next = s.offset + s.phones
	}
	if total != 103 {
		t.Fatalf("shares sum to %d", total)
	}
	if autoProcs(100000, 16) != 6 || autoProcs(1000, 16) != 1 {
		t.Fatalf("autoProcs: %d %d", autoProcs(100000, 16), autoProcs(1000, 16))
	}
}

func TestSourceAddrs(t *testing.T) {
	if got := sourceAddrs("127.0.0.1:8080", 3); len(got) != 3 || got[0].String() != "127.0.0.2:0" || got[2].String() != "127.0.0.4:0" {
		t.Errorf("loopback: %v", got)
	}
	if got := sourceAddrs("localhost:8080", 2); len(got) != 2 {
		t.Errorf("localhost: %v", got)
	}
	for _, a := range []string{"10.1.2.3:8080", "[::1]:8080", "relay.example:443"} {
		if got := sourceAddrs(a, 8); got != nil {
			t.Errorf("%s: %v, want no binding", a, got)
		}
	}
	if got := sourceAddrs("127.0.0.1:1", 0); got != nil {
		t.Errorf("disabled: %v", got)
	}
}

// TestSlotSchedule: phone g of n owns slots g, g+n, …, so the phones'
// schedules merge into one message every 1/rate seconds.
func TestSlotSchedule(t *testing.T) {
	const n, rate = 7, 350.0
	var all []time.Duration
	for g := range int64(n) {
		for k := range uint64(50) {
			all = append(all, slotTime(g, k, n, rate))
		}
	}
	slices.Sort(all)
	step := float64(time.Second) / rate
	for i, d := range all {
		if want := time.Duration(float64(i) * step); d-want > time.Microsecond || want-d > time.Microsecond {
			t.Fatalf("slot %d at %v, want %v", i, d, want)
		}
	}
}

// discardConn is a net.Conn whose writes vanish.
type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error) { return len(b), nil }
func (discardConn) Close() error                { return nil }

// TestOpenLoopSend: a slot sends without allocating, and one that finds the
// cap reached is skipped as late_send without touching the socket.
func TestOpenLoopSend(t *testing.T) {
	e := newEngine(Config{Mode: modeActive, Phones: 4, Inflight: 4, Size: 256, Rate: 100}, share{procs: 1})
	p := &phone{e: e, c: &wsclient.Client{Conn: discardConn{}}, id: 3}
	o := newOpenLoop(e, p)
	o.send(0, 0) // warm the client's write buffer
	o.want.Store(o.next.Load())
	allocs := testing.AllocsPerRun(200, func() {
		o.send(time.Millisecond, 2*time.Millisecond)
		o.want.Store(o.next.Load()) // the reply came back
	})
	if allocs != 0 {
		t.Errorf("%v allocations per send", allocs)
	}
	if len(e.errs.snapshot()) != 0 {
		t.Fatalf("errors %v", e.errs.snapshot())
	}
	sent := e.sends.Load()
	for range 6 { // 4 fit under the cap, 2 are skipped
		if !o.send(0, 0) {
			t.Fatal("send failed")
		}
	}
	if got := e.errs.snapshot()["late_send"]; got != 2 || e.sends.Load() != sent+4 {
		t.Errorf("late_send %d, sends %d, want 2 and %d", got, e.sends.Load(), sent+4)
	}
	if lag := e.lag.snapshot(); lag.Max != uint64(time.Millisecond) {
		t.Errorf("send lag max %v, want 1ms", time.Duration(lag.Max))
	}
}

func TestRateFlags(t *testing.T) {
	var errb bytes.Buffer
	c, err := parseFlags([]string{"--mode", "active", "--rate", "500"}, &errb)
	if err != nil || c.Inflight != defaultRateCap || c.Rate != 500 {
		t.Errorf("default cap with --rate: inflight %d rate %g err %v", c.Inflight, c.Rate, err)
	}
	c, err = parseFlags([]string{"--mode", "active", "--rate", "500", "--inflight", "2"}, &errb)
	if err != nil || c.Inflight != 2 {
		t.Errorf("explicit cap: inflight %d err %v", c.Inflight, err)
	}
	if slices.Index(workerArgs(&c, 0), "--rate") < 0 {
		t.Errorf("workers are not told the rate: %v", workerArgs(&c, 0))
	}
	for _, args := range [][]string{{"--mode", "idle", "--rate", "10"}, {"--mode", "active", "--rate", "-1"}} {
		if _, err := parseFlags(args, &errb); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
