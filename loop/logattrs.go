package loop

import (
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Every connection's log line names the client the same way, in both log
// formats (docs/operations.md, Logs):
//
//   - remote: the client as "ip:port": the PROXY v2 header's source, or a
//     trusted X-Forwarded-For (port 0 when the header names none), else
//     the socket peer (127.0.0.1:0 for a unix socket's, see unixPeer).
//   - proxy: the socket peer as "ip:port", only when remote came from one
//     of those headers: the load balancer the client came through. On a
//     unix socket, whose peer has no address, always "unix".

// proxyUnix is the proxy attribute of a connection that came over a unix
// socket.
const proxyUnix = "unix"

// addrs is the remote (and proxy) attributes of c's log lines. Its empty
// key makes slog inline them; they are worked out only when a line is
// written, so a debug call that is off costs nothing.
func (c *conn) addrs() slog.Attr { return slog.Any("", connAddrs{c}) }

type connAddrs struct{ c *conn }

func (a connAddrs) LogValue() slog.Value {
	c := a.c
	remote := netip.AddrPortFrom(c.src, c.srcPort)
	remoteAttr := slog.String("remote", remote.String())
	if c.nc == nil {
		return slog.GroupValue(remoteAttr)
	}
	// netpoll keeps the peer's address after the socket has closed, so a
	// departed binary's grace lines still have it.
	switch ra := c.nc.RemoteAddr().(type) {
	case *net.TCPAddr:
		ap := ra.AddrPort()
		if peer := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()); peer != remote {
			return slog.GroupValue(remoteAttr, slog.String("proxy", peer.String()))
		}
	case *net.UnixAddr:
		return slog.GroupValue(remoteAttr, slog.String("proxy", proxyUnix))
	}
	return slog.GroupValue(remoteAttr)
}

// setSource records the client's address as a PROXY header or a trusted
// X-Forwarded-For names it: src keys the rate limit, srcPort only the logs.
func (c *conn) setSource(ap netip.AddrPort) {
	c.src, c.srcPort = ap.Addr(), ap.Port()
}

// graceAway is how long the departed binary prev has been gone, for a
// reclaim of its slot: its grace deadline was booked GracePeriod after it
// left. A deadline already cleared means the wheel was expiring the window
// as the reclaim won it: the whole period, near enough.
func (s *Server) graceAway(prev *conn) time.Duration {
	due := prev.graceDue.Load()
	if due == 0 {
		return s.cfg.GracePeriod
	}
	left := time.Duration(due - prev.wheelNow())
	return max(s.cfg.GracePeriod-left, 0)
}
