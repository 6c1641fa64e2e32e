package loop

import (
	"bytes"
	"net/netip"

	"switchboard/loop/proxyproto"
	"switchboard/wsframe"
)

// Admission: what a connection must get past before the relay upgrades it.
//
//  1. With Config.ProxyProtocol, a PROXY protocol v2 header before anything
//     else (proxyHeader). Missing or bad: the socket is closed at once with
//     nothing answered and nothing more read (RejectBadProxyHeader).
//  2. The request head (handshake): 431 too large, 400 malformed, 404 path;
//     /healthz is answered here and is never rate limited. None of these
//     names an upgrade path, so none spends a token.
//  3. For /v1/server and /v1/client: the per-source rate limit first (admit,
//     429), then 405 method, 400 missing header, 400 bad server-id, 426 not
//     an upgrade, 503 (draining, or at the connection cap). Every attempt on
//     an upgrade path spends a token, whatever the gate then answers, as the
//     reference relay counts them: a limit that only
//     counted attempts reaching the 101 would let one source probe the
//     header gate without end. A source over its limit learns that before
//     anything else and never takes a connection slot.

// proxyHeader consumes the PROXY v2 header at the start of data and returns
// its length, or 0 when more bytes are needed or the header was refused
// (readDone is then set and the socket closed).
func (c *conn) proxyHeader(data []byte) int {
	src, n, err := proxyproto.ParseV2(data)
	if err != nil {
		c.readDone = true
		c.srv.counters.Rejects[RejectBadProxyHeader].Add(1)
		c.srv.log.Debug("request refused", "reason", RejectBadProxyHeader.String(), c.addrs(), "err", err)
		c.closeSocket()
		return 0
	}
	if n == 0 {
		return 0 // staged until the rest arrives
	}
	c.proxied = true
	if src.IsValid() {
		c.setSource(src)
	} // LOCAL or UNSPEC: the socket's own address stands
	return n
}

// admit applies the per-source rate limit to a request on an upgrade path,
// before any other check of it, and reports whether it may go on; a refused
// request has been answered 429.
func (c *conn) admit(req *wsframe.Request) bool {
	if c.srv.cfg.TrustXForwardedFor {
		if a, ok := forwardedFor(req.Header("X-Forwarded-For")); ok {
			c.setSource(a)
		}
	}
	l := c.srv.limiter
	if l == nil {
		return true
	}
	src := c.source()
	if exempt(c.srv.cfg.RateLimitExempt, src) {
		c.srv.counters.RateLimitExempt.Add(1)
		return true
	}
	if !l.Allow(rateKey(src, c.srv.cfg.RateLimitIPv6Prefix)) {
		c.reject(RejectRateLimit, 429, "")
		return false
	}
	return true
}

// rateKey is the bucket a source spends from: an IPv4 address on its own
// (IPv4 and its IPv6-mapped form share a bucket), an IPv6 address by its
// first ipv6Bits bits, since one subscriber holds a whole prefix.
func rateKey(src netip.Addr, ipv6Bits int) [16]byte {
	src = src.Unmap()
	if src.Is6() {
		if p, err := src.WithZone("").Prefix(ipv6Bits); err == nil {
			src = p.Addr()
		}
	}
	return src.As16()
}

// exempt reports whether src lies in one of the prefixes the rate limit
// does not apply to.
func exempt(prefixes []netip.Prefix, src netip.Addr) bool {
	src = src.Unmap()
	for _, p := range prefixes {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// source is the address the relay keys and logs the connection by: a
// trusted X-Forwarded-For, else the PROXY header's source, else the peer.
func (c *conn) source() netip.Addr {
	return c.src // the peer's address unless a header above replaced it
}

// forwardedFor parses the left-most address of an X-Forwarded-For value:
// a bare IPv4 or IPv6 address (port 0 then), or either with a port
// ("[::1]:80").
func forwardedFor(v []byte) (netip.AddrPort, bool) {
	if i := bytes.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	v = bytes.Trim(v, " \t")
	if len(v) == 0 || len(v) > 64 {
		return netip.AddrPort{}, false
	}
	s := string(v)
	var port uint16
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.AddrPort{}, false
		}
		a, port = ap.Addr(), ap.Port()
	}
	return netip.AddrPortFrom(a.WithZone("").Unmap(), port), true
}
