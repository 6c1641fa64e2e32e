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
//     the socket peer.
//   - proxy: the socket peer as "ip:port", only when remote came from one
//     of those headers: the load balancer the client came through.

// addrs is the remote (and proxy) attributes of c's log lines. Its empty
// key makes slog inline them; they are worked out only when a line is
// written, so a debug call that is off costs nothing.
func (c *conn) addrs() slog.Attr { return slog.Any("", connAddrs{c}) }

type connAddrs struct{ c *conn }

func (a connAddrs) LogValue() slog.Value {
	c := a.c
	remote := netip.AddrPortFrom(c.src, c.srcPort)
	peer, ok := c.peer()
	if !ok || peer == remote {
		return slog.GroupValue(slog.String("remote", remote.String()))
	}
	return slog.GroupValue(slog.String("remote", remote.String()), slog.String("proxy", peer.String()))
}

// peer is the socket's remote address. netpoll keeps it after the socket
// has closed, so a departed binary's grace lines still have it.
func (c *conn) peer() (netip.AddrPort, bool) {
	if c.nc == nil {
		return netip.AddrPort{}, false
	}
	ta, ok := c.nc.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
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
