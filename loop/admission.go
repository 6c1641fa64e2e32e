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
	if l := c.srv.limiter; l != nil && !l.Allow(c.source().As16()) /* IPv4 and its IPv6-mapped form share a bucket */ {
		c.reject(RejectRateLimit, 429, "")
		return false
	}
	return true
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
