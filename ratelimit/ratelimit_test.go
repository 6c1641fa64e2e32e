package ratelimit

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func key4(i uint32) [16]byte {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], i)
	return netip.AddrFrom4(a).As16()
}

func TestRateLimiterBurstThenOnePerInterval(t *testing.T) {
	l := New[[16]byte](3, 100, 1<<10)
	k := key4(1)
	for i := range 3 {
		if !l.AllowAt(k, 0) {
			t.Fatalf("attempt %d of the burst refused", i+1)
		}
	}
	for _, now := range []int64{0, 1, 50, 99} {
		if l.AllowAt(k, now) {
			t.Fatalf("attempt past the burst allowed at %d", now)
		}
	}
	// Refused attempts spent nothing: one token is back after one interval.
	if !l.AllowAt(k, 100) {
		t.Fatal("no token after one interval")
	}
	if l.AllowAt(k, 100) || l.AllowAt(k, 199) {
		t.Fatal("two tokens after one interval")
	}
	// Idle long enough to be full: the whole burst again, never more.
	now := int64(200 + 3*100)
	for i := range 3 {
		if !l.AllowAt(k, now) {
			t.Fatalf("refilled burst: attempt %d refused", i+1)
		}
	}
	if l.AllowAt(k, now) {
		t.Fatal("refilled past the burst")
	}
	// Another source is untouched by all of this.
	if !l.AllowAt(key4(2), now) {
		t.Fatal("an unrelated source was limited")
	}
}

func TestRateLimiterOff(t *testing.T) {
	if l := New[[16]byte](0, time.Second, 1<<10); l != nil {
		t.Fatal("burst 0 should turn the limiter off")
	}
}

func TestRateLimiterIPv4SpellingsShareABucket(t *testing.T) {
	l := New[[16]byte](1, time.Hour, 1<<10)
	if !l.Allow(netip.MustParseAddr("192.0.2.1").As16()) {
		t.Fatal("first attempt refused")
	}
	if l.Allow(netip.MustParseAddr("::ffff:192.0.2.1").As16()) {
		t.Fatal("the v4-mapped spelling got a bucket of its own")
	}
}

func TestRateLimiterForgetsIdleSources(t *testing.T) {
	const interval, burst = 10, 2
	l := New[[16]byte](burst, interval, 1<<16)
	for i := range uint32(5000) {
		l.AllowAt(key4(i), 0)
	}
	if n := l.Len(); n != 5000 {
		t.Fatalf("%d sources, want 5000", n)
	}
	// All of them are full again at burst*interval; newcomers sweep them.
	now := int64(burst * interval)
	for i := range uint32(5000) {
		l.AllowAt(key4(1<<20+i), now)
	}
	if n := l.Len(); n > 5000+500 {
		t.Fatalf("%d sources after the idle ones could go, want most of the 5000 idle ones swept", n)
	}
}

// A flood of distinct sources never takes the table past its cap, never
// turns a newcomer away, and does not refill a source that spent its burst.
func TestRateLimiterFloodStaysUnderCap(t *testing.T) {
	const maxSources = 1 << 14
	l := New[[16]byte](3, time.Minute, maxSources)
	spent := netip.MustParseAddr("2001:db8::dead").As16()
	for range 3 {
		l.AllowAt(spent, 0)
	}
	for i := range uint32(100_000) {
		if !l.AllowAt(key4(i), 1) {
			t.Fatalf("newcomer %d refused", i)
		}
		if i%1000 == 0 {
			if n := l.Len(); n > maxSources {
				t.Fatalf("%d sources after %d newcomers, cap %d", n, i+1, maxSources)
			}
		}
	}
	if n := l.Len(); n > maxSources || n < maxSources*9/10 {
		t.Fatalf("%d sources after the flood, want near the cap %d", n, maxSources)
	}
	var v6 [16]byte
	v6[0] = 0x20
	for i := range uint32(100_000) {
		binary.BigEndian.PutUint32(v6[12:], i)
		l.AllowAt(v6, 2)
	}
	if n := l.Len(); n > maxSources {
		t.Fatalf("%d sources after an IPv6 flood, cap %d", n, maxSources)
	}
	if l.AllowAt(spent, 2) {
		t.Fatal("the flood evicted a source that had spent its burst")
	}
}

func TestRateLimiterConcurrent(t *testing.T) {
	l := New[[16]byte](50, time.Hour, 1<<10)
	src := netip.MustParseAddr("198.51.100.7")
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if l.Allow(src.As16()) {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if allowed.Load() != 50 {
		t.Fatalf("%d allowed, want exactly the burst of 50", allowed.Load())
	}
}

func TestRateLimiterKnownSourceAllocatesNothing(t *testing.T) {
	l := New[[16]byte](5, time.Millisecond, 1<<10)
	src := netip.MustParseAddr("2001:db8::1")
	l.Allow(src.As16())
	if a := testing.AllocsPerRun(1000, func() { l.Allow(src.As16()) }); a != 0 {
		t.Fatalf("%v allocations per check", a)
	}
}
