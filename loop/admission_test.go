package loop_test

// Admission over real loopback sockets: the per-source rate limit on the
// upgrade paths, and where the source comes from (socket, PROXY protocol v2
// header, trusted X-Forwarded-For).

import (
	"encoding/binary"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"switchboard/loop"
)

var admissionIDs atomic.Int64

// attempt dials, sends prefix (a PROXY header, or nothing) and an upgrade
// request for path with the extra header lines, and returns the status and
// body of the answer. Binaries get a fresh server-id each time; phones name
// one nobody holds (101, then 4404: only the HTTP answer matters here).
func admAttempt(t *testing.T, addr string, prefix []byte, path string, extra ...string) (int, string) {
	t.Helper()
	lines := rawPhoneLines("nobody-home")
	if path == "/v1/server" {
		lines = rawBinaryLines(fmt.Sprintf("adm-%d", admissionIDs.Add(1)))
	}
	rc := rawDial(t, addr)
	rc.write(append(append([]byte(nil), prefix...), requestHead(path, append(withUpgrade(lines), extra...)...)...))
	resp, body := rc.response()
	_ = rc.Conn.Close()
	return resp.StatusCode, string(body)
}

func admExpect(t *testing.T, what string, got, want int) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: status %d, want %d", what, got, want)
	}
}

func admHealth(t *testing.T, addr string, prefix []byte) int {
	t.Helper()
	rc := rawDial(t, addr)
	rc.write(append(append([]byte(nil), prefix...), requestHead("/healthz")...))
	resp, _ := rc.response()
	_ = rc.Conn.Close()
	return resp.StatusCode
}

func TestRateLimitBurstEdge(t *testing.T) {
	const burst = 5
	r := startRelay(t, loop.Config{RateLimitBurst: burst, RateLimitInterval: time.Hour})
	for i := 1; i <= burst; i++ {
		path := "/v1/client"
		if i%2 == 0 {
			path = "/v1/server" // both upgrade paths draw on one bucket
		}
		st, _ := admAttempt(t, r.Addr, nil, path)
		admExpect(t, fmt.Sprintf("attempt %d of %d (%s)", i, burst, path), st, 101)
	}
	for _, path := range []string{"/v1/client", "/v1/server"} {
		lines := rawBinaryLines("over-limit")
		if path == "/v1/client" {
			lines = rawPhoneLines("over-limit")
		}
		rc := rawDial(t, r.Addr)
		rc.write([]byte(requestHead(path, withUpgrade(lines)...)))
		resp, body := rc.response()
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("%s past the burst: status %d, want 429", path, resp.StatusCode)
		}
		if len(body) != 0 || resp.ContentLength != 0 {
			t.Fatalf("429 body %q (Content-Length %d), want empty", body, resp.ContentLength)
		}
		rc.expectEOF()
	}
	if got := r.Counters().Reject(loop.RejectRateLimit); got != 2 {
		t.Fatalf("RejectRateLimit = %d, want 2", got)
	}
	if loop.RejectRateLimit.String() != "rate_limited" {
		t.Fatalf("reason name %q", loop.RejectRateLimit.String())
	}
}

func TestRateLimitRefillsAfterInterval(t *testing.T) {
	const interval = 300 * time.Millisecond
	r := startRelay(t, loop.Config{RateLimitBurst: 2, RateLimitInterval: interval})
	start := time.Now()
	for i := range 2 {
		st, _ := admAttempt(t, r.Addr, nil, "/v1/client")
		admExpect(t, fmt.Sprintf("attempt %d", i+1), st, 101)
	}
	st, _ := admAttempt(t, r.Addr, nil, "/v1/client")
	admExpect(t, "attempt 3", st, 429)
	// Poll: refused attempts spend nothing, and the first token is back one
	// interval after the first attempt.
	deadline := time.Now().Add(testTimeout)
	for {
		st, _ = admAttempt(t, r.Addr, nil, "/v1/client")
		if st == 101 {
			break
		}
		admExpect(t, "waiting for a token", st, 429)
		if time.Now().After(deadline) {
			t.Fatalf("no token back within %s", testTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	refilled := time.Now()
	if waited := refilled.Sub(start); waited < interval {
		t.Fatalf("a token came back after %s, before the interval %s", waited, interval)
	}
	// One token, not two: the next attempt right away is refused (only
	// checkable while "right away" is well inside the next interval).
	st, _ = admAttempt(t, r.Addr, nil, "/v1/client")
	if time.Since(refilled) < interval/2 {
		admExpect(t, "attempt right after the refill", st, 429)
	}
}

func TestRateLimitOffWithBurstZero(t *testing.T) {
	r := startRelay(t, loop.Config{RateLimitBurst: 0, RateLimitInterval: time.Hour})
	for i := range 60 {
		st, _ := admAttempt(t, r.Addr, nil, "/v1/client")
		admExpect(t, fmt.Sprintf("attempt %d", i+1), st, 101)
	}
	if got := r.Counters().Reject(loop.RejectRateLimit); got != 0 {
		t.Fatalf("RejectRateLimit = %d with the limit off", got)
	}
}

func TestHealthzIsNeverRateLimited(t *testing.T) {
	r := startRelay(t, loop.Config{RateLimitBurst: 1, RateLimitInterval: time.Hour})
	for i := range 10 {
		admExpect(t, fmt.Sprintf("healthz %d", i+1), admHealth(t, r.Addr, nil), 200)
	}
	st, _ := admAttempt(t, r.Addr, nil, "/v1/client")
	admExpect(t, "first upgrade after healthz", st, 101) // healthz spent nothing
	st, _ = admAttempt(t, r.Addr, nil, "/v1/client")
	admExpect(t, "second upgrade", st, 429)
	for i := range 10 {
		admExpect(t, fmt.Sprintf("healthz over the limit %d", i+1), admHealth(t, r.Addr, nil), 200)
	}
}

// TestRateLimitCountsHeaderGateRefusals: every attempt on an upgrade path
// spends a token, the ones the header gate answers 400 too, so after a
// burst of 400s the next attempt, valid or not, gets 429 (issue 11 item 6:
// the 21st got 101, and the gate could be probed without limit).
func TestRateLimitCountsHeaderGateRefusals(t *testing.T) {
	const burst = loop.DefaultRateLimitBurst // 20, the reference's burst
	r := startRelay(t, loop.Config{RateLimitBurst: burst, RateLimitInterval: time.Hour})
	missingToken := requestHead("/v1/client", withUpgrade([]string{"User-Agent: x", "X-Pyrycode-Server: s"})...)
	for i := 1; i <= burst; i++ {
		resp, _ := exchange(t, r.Addr, missingToken)
		admExpect(t, fmt.Sprintf("missing token, %d of %d", i, burst), resp.StatusCode, 400)
	}
	st, _ := admAttempt(t, r.Addr, nil, "/v1/server")
	admExpect(t, "valid binary upgrade after the 400s", st, 429)
	resp, _ := exchange(t, r.Addr, missingToken)
	admExpect(t, "another missing token past the burst", resp.StatusCode, 429)
	c := r.Counters()
	if got := c.Reject(loop.RejectHeaders); got != burst {
		t.Fatalf("RejectHeaders = %d, want %d", got, burst)
	}
	if got := c.Reject(loop.RejectRateLimit); got != 2 {
		t.Fatalf("RejectRateLimit = %d, want 2", got)
	}
	if s, p := c.Upgrades[0][loop.UpgradeRejectRateLimit].Load(), c.Upgrades[1][loop.UpgradeRejectRateLimit].Load(); s != 1 || p != 1 {
		t.Fatalf("reject_rate_limit server=%d client=%d, want 1 1", s, p)
	}
	admExpect(t, "healthz over the limit", admHealth(t, r.Addr, nil), 200)
}

// TestRateLimitOrderAmongRefusals: the limit is the first check on an
// upgrade path. Each refusal of the gate behind it (405, 400, 426, 503)
// spends a token, and once the source is over its limit every one of them
// is answered 429 instead. Requests that name no upgrade path (404, a head
// too malformed to read a path from, /healthz) spend nothing.
func TestRateLimitOrderAmongRefusals(t *testing.T) {
	tooLongID := strings.Repeat("s", 129)
	gate := []struct {
		what   string
		head   string
		status int
	}{
		{"wrong method", strings.Replace(requestHead("/v1/server", withUpgrade(rawBinaryLines("b"))...), "GET ", "POST ", 1), 405},
		{"missing header", requestHead("/v1/client", withUpgrade([]string{"User-Agent: x", "X-Pyrycode-Server: s"})...), 400},
		{"bad server-id", requestHead("/v1/server", withUpgrade(rawBinaryLines(tooLongID))...), 400},
		{"not an upgrade", requestHead("/v1/client", rawPhoneLines("s")...), 426},
		{"at capacity", requestHead("/v1/client", withUpgrade(rawPhoneLines("s"))...), 503},
	}
	free := []struct {
		what   string
		head   string
		status int
	}{
		{"unknown path", requestHead("/v1/servers", withUpgrade(rawBinaryLines("b"))...), 404},
		{"malformed head", "GET /v1/client HTTP/1.1\r\nno colon here\r\n\r\n", 400},
		{"healthz", requestHead("/healthz"), 200},
	}
	burst := 1 + len(gate) // the holder's 101, then each refusal once
	r := startRelay(t, loop.Config{RateLimitBurst: burst, RateLimitInterval: time.Hour, MaxConnections: 1})
	for _, f := range free {
		for i := range burst + 1 { // more than the burst: had they spent, the gate below would see 429
			resp, _ := exchange(t, r.Addr, f.head)
			admExpect(t, fmt.Sprintf("%s %d", f.what, i+1), resp.StatusCode, f.status)
		}
	}
	b := rawUpgrade(t, r.Addr, "/v1/server", rawBinaryLines("holder"), nil) // a token, and the one slot
	defer func() { _ = b.Conn.Close() }()
	for _, g := range gate {
		resp, _ := exchange(t, r.Addr, g.head)
		admExpect(t, g.what+" within the burst", resp.StatusCode, g.status)
	}
	for _, g := range gate {
		resp, body := exchange(t, r.Addr, g.head)
		admExpect(t, g.what+" past the burst", resp.StatusCode, 429)
		if len(body) != 0 {
			t.Fatalf("%s past the burst: body %q, want empty", g.what, body)
		}
	}
	c := r.Counters()
	if got := c.Reject(loop.RejectRateLimit); got != uint64(len(gate)) {
		t.Fatalf("RejectRateLimit = %d, want %d", got, len(gate))
	}
	for why, want := range map[loop.RejectReason]uint64{loop.RejectMethod: 1, loop.RejectHeaders: 1,
		loop.RejectServerID: 1, loop.RejectNotUpgrade: 1, loop.RejectCapacity: 1} {
		if got := c.Reject(why); got != want {
			t.Fatalf("%s = %d, want %d", why, got, want)
		}
	}
}

func TestXForwardedForOnlyWhenTrusted(t *testing.T) {
	xff := func(v string) string { return "X-Forwarded-For: " + v }
	t.Run("ignored", func(t *testing.T) {
		r := startRelay(t, loop.Config{RateLimitBurst: 1, RateLimitInterval: time.Hour})
		st, _ := admAttempt(t, r.Addr, nil, "/v1/client", xff("203.0.113.1"))
		admExpect(t, "first source", st, 101)
		st, _ = admAttempt(t, r.Addr, nil, "/v1/client", xff("203.0.113.2"))
		admExpect(t, "another forwarded source, same socket", st, 429)
	})
	t.Run("trusted", func(t *testing.T) {
		r := startRelay(t, loop.Config{RateLimitBurst: 1, RateLimitInterval: time.Hour, TrustXForwardedFor: true})
		for _, v := range []string{"203.0.113.1", "203.0.113.2, 10.0.0.1", "2001:db8::1", " 198.51.100.4 , 203.0.113.1"} {
			st, _ := admAttempt(t, r.Addr, nil, "/v1/client", xff(v))
			admExpect(t, "first attempt of "+v, st, 101)
		}
		for _, v := range []string{"203.0.113.1", "203.0.113.2", "2001:db8:0::1, 192.0.2.1", "::ffff:198.51.100.4"} {
			st, _ := admAttempt(t, r.Addr, nil, "/v1/client", xff(v))
			admExpect(t, "second attempt of "+v, st, 429)
		}
		// Unparseable or absent: the socket's address is the source.
		st, _ := admAttempt(t, r.Addr, nil, "/v1/client", xff("unknown"))
		admExpect(t, "unparseable X-Forwarded-For, first from the socket", st, 101)
		st, _ = admAttempt(t, r.Addr, nil, "/v1/client")
		admExpect(t, "no X-Forwarded-For, second from the socket", st, 429)
	})
}

// proxyHeader builds a PROXY protocol v2 header. src "" builds LOCAL; an
// IPv4 src builds TCP4, an IPv6 one TCP6.
func admProxyHeader(src string) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n")
	if src == "" {
		return append(b, 0x20, 0x00, 0, 0)
	}
	a := netip.MustParseAddr(src)
	var body []byte
	fam := byte(0x11)
	if a.Is4() {
		s, d := a.As4(), netip.MustParseAddr("10.9.9.9").As4()
		body = append(s[:], d[:]...)
	} else {
		fam = 0x21
		s, d := a.As16(), netip.MustParseAddr("2001:db8:ffff::9").As16()
		body = append(s[:], d[:]...)
	}
	body = binary.BigEndian.AppendUint16(body, 40000)
	body = binary.BigEndian.AppendUint16(body, 443)
	b = append(b, 0x21, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

func TestProxyV2SourceIsTheKey(t *testing.T) {
	r := startRelay(t, loop.Config{RateLimitBurst: 1, RateLimitInterval: time.Hour, ProxyProtocol: true})
	for _, src := range []string{"192.0.2.1", "192.0.2.2", "2001:db8:1::1", "2001:db8:2::1"} {
		st, _ := admAttempt(t, r.Addr, admProxyHeader(src), "/v1/client")
		admExpect(t, "first from "+src, st, 101)
	}
	for _, src := range []string{"192.0.2.1", "2001:db8:1::1", "::ffff:192.0.2.2"} {
		st, _ := admAttempt(t, r.Addr, admProxyHeader(src), "/v1/server")
		admExpect(t, "second from "+src, st, 429)
	}
	admExpect(t, "healthz behind PROXY", admHealth(t, r.Addr, admProxyHeader("192.0.2.1")), 200)
}

// An IPv6 source is keyed on its first RateLimitIPv6Prefix bits: a /64
// is one subscriber, not 2^64 sources.
func TestRateLimitIPv6Prefix(t *testing.T) {
	xff := func(v string) string { return "X-Forwarded-For: " + v }
	for _, tc := range []struct {
		bits         int
		first        string
		sameBucket   []string
		othersBucket []string
	}{
		{0 /* default: 64 */, "2001:db8:1::1",
			[]string{"2001:db8:1::2", "2001:db8:1:0:ffff:ffff:ffff:ffff", "2001:db8:1:0:8000::1"},
			[]string{"2001:db8:1:1::1", "2001:db8:0:ffff:ffff:ffff:ffff:ffff", "192.0.2.1"}},
		{128, "2001:db8:1::1", nil, []string{"2001:db8:1::2", "2001:db8:1::3"}},
		{48, "2001:db8:1::1", []string{"2001:db8:1:1::1", "2001:db8:1:ffff::1"}, []string{"2001:db8:2::1"}},
	} {
		t.Run(fmt.Sprint(tc.bits), func(t *testing.T) {
			r := startRelay(t, loop.Config{RateLimitBurst: 1, RateLimitInterval: time.Hour, TrustXForwardedFor: true, RateLimitIPv6Prefix: tc.bits})
			st, _ := admAttempt(t, r.Addr, nil, "/v1/client", xff(tc.first))
			admExpect(t, "first from "+tc.first, st, 101)
			for _, src := range tc.sameBucket {
				st, _ := admAttempt(t, r.Addr, nil, "/v1/client", xff(src))
				admExpect(t, src+" after "+tc.first, st, 429)
			}
			for _, src := range tc.othersBucket {
				st, _ := admAttempt(t, r.Addr, nil, "/v1/client", xff(src))
				admExpect(t, src+" (its own bucket)", st, 101)
			}
		})
	}
}

// An exempt source is never refused 429, however often it comes; one just
// outside the range is limited as usual.
func TestRateLimitExempt(t *testing.T) {
	xff := func(v string) string { return "X-Forwarded-For: " + v }
	r := startRelay(t, loop.Config{RateLimitBurst: 1, RateLimitInterval: time.Hour, TrustXForwardedFor: true,
		RateLimitExempt: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("2001:db8:e::/48")}})
	exempt := []string{"100.64.0.1", "100.127.255.254", "100.64.0.1", "::ffff:100.64.0.1", "2001:db8:e::1", "2001:db8:e::1", "2001:db8:e:ffff::1"}
	for i, src := range exempt {
		st, _ := admAttempt(t, r.Addr, nil, "/v1/client", xff(src))
		admExpect(t, fmt.Sprintf("exempt attempt %d from %s", i+1, src), st, 101)
	}
	for _, src := range []string{"100.128.0.1", "100.63.255.255", "2001:db8:f::1"} {
		st, _ := admAttempt(t, r.Addr, nil, "/v1/client", xff(src))
		admExpect(t, "first from "+src+" (outside the exempt ranges)", st, 101)
		st, _ = admAttempt(t, r.Addr, nil, "/v1/client", xff(src))
		admExpect(t, "second from "+src+" (outside the exempt ranges)", st, 429)
	}
	if got := r.Counters().RateLimitExempt.Load(); got != uint64(len(exempt)) {
		t.Fatalf("RateLimitExempt = %d, want %d", got, len(exempt))
	}
}

func TestProxyV2LocalUsesSocketAddress(t *testing.T) {
	r := startRelay(t, loop.Config{RateLimitBurst: 1, RateLimitInterval: time.Hour, ProxyProtocol: true})
	st, _ := admAttempt(t, r.Addr, admProxyHeader(""), "/v1/client")
	admExpect(t, "first LOCAL", st, 101)
	st, _ = admAttempt(t, r.Addr, admProxyHeader(""), "/v1/client")
	admExpect(t, "second LOCAL (same socket address)", st, 429)
	st, _ = admAttempt(t, r.Addr, admProxyHeader("192.0.2.77"), "/v1/client")
	admExpect(t, "PROXY from another source", st, 101)
	// PROXY with family UNSPEC also means the socket's address.
	unspec := append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x21, 0x00, 0, 0)
	st, _ = admAttempt(t, r.Addr, unspec, "/v1/client")
	admExpect(t, "PROXY UNSPEC (socket address)", st, 429)
}

func TestProxyV2WithTrustedXForwardedFor(t *testing.T) {
	r := startRelay(t, loop.Config{RateLimitBurst: 1, RateLimitInterval: time.Hour, ProxyProtocol: true, TrustXForwardedFor: true})
	st, _ := admAttempt(t, r.Addr, admProxyHeader("192.0.2.1"), "/v1/client", "X-Forwarded-For: 203.0.113.50")
	admExpect(t, "forwarded source", st, 101)
	st, _ = admAttempt(t, r.Addr, admProxyHeader("192.0.2.1"), "/v1/client")
	admExpect(t, "PROXY source, no X-Forwarded-For", st, 101)
	st, _ = admAttempt(t, r.Addr, admProxyHeader("192.0.2.2"), "/v1/client", "X-Forwarded-For: 203.0.113.50")
	admExpect(t, "same forwarded source via another proxy address", st, 429)
}

func TestProxyV2SplitByteByByte(t *testing.T) {
	r := startRelay(t, loop.Config{RateLimitBurst: 1, RateLimitInterval: time.Hour, ProxyProtocol: true})
	for _, src := range []string{"192.0.2.10", "2001:db8::10"} {
		msg := append(admProxyHeader(src), requestHead("/v1/client", withUpgrade(rawPhoneLines("nobody-home"))...)...)
		rc := rawDial(t, r.Addr)
		hdr := len(admProxyHeader(src))
		for i := range msg {
			rc.write(msg[i : i+1])
			if i < hdr+8 {
				time.Sleep(time.Millisecond) // the header surely in many reads
			}
		}
		resp, _ := rc.response()
		admExpect(t, "split header from "+src, resp.StatusCode, 101)
		_ = rc.Conn.Close()
		st, _ := admAttempt(t, r.Addr, admProxyHeader(src), "/v1/client")
		admExpect(t, "the split header's source was the key: "+src, st, 429)
	}
	if got := r.Counters().Reject(loop.RejectBadProxyHeader); got != 0 {
		t.Fatalf("RejectBadProxyHeader = %d", got)
	}
}

func TestProxyV2MissingOrBadHeaderClosesSilently(t *testing.T) {
	r := startRelay(t, loop.Config{ProxyProtocol: true})
	good := admProxyHeader("192.0.2.1")
	badVersion := append([]byte(nil), good...)
	badVersion[12] = 0x11
	badFamily := append([]byte(nil), good...)
	badFamily[13] = 0x31
	tooLong := append([]byte(nil), good[:14]...)
	tooLong = append(tooLong, 0xff, 0xff)
	cases := []struct {
		name string
		in   []byte
	}{
		{"no header, healthz", []byte(requestHead("/healthz"))},
		{"no header, upgrade", []byte(requestHead("/v1/client", withUpgrade(rawPhoneLines("s"))...))},
		{"first bytes of a request only", []byte("GET ")},
		{"text PROXY v1", []byte("PROXY TCP4 192.0.2.1 10.0.0.1 1 2\r\n" + requestHead("/healthz"))},
		{"version 1", append(badVersion, requestHead("/healthz")...)},
		{"family unix", append(badFamily, requestHead("/healthz")...)},
		{"length over the cap", tooLong},
	}
	for i, tc := range cases {
		rc := rawDial(t, r.Addr)
		rc.write(tc.in)
		// Closed at once: well before any handshake deadline.
		_ = rc.Conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if err := rc.ExpectEOF(); err != nil {
			t.Fatalf("%s: want the connection closed with nothing sent: %v", tc.name, err)
		}
		if got := r.Counters().Reject(loop.RejectBadProxyHeader); got != uint64(i+1) {
			t.Fatalf("%s: RejectBadProxyHeader = %d, want %d", tc.name, got, i+1)
		}
	}
	// Nothing after a bad header was read as a request.
	for _, why := range []loop.RejectReason{loop.RejectMalformed, loop.RejectNotFound, loop.RejectHeaders} {
		if got := r.Counters().Reject(why); got != 0 {
			t.Fatalf("%s = %d: input after a bad header was parsed", why, got)
		}
	}
	if loop.RejectBadProxyHeader.String() != "bad_proxy_header" {
		t.Fatalf("reason name %q", loop.RejectBadProxyHeader.String())
	}
}
