package relaytest

import (
	"context"
	"net"
)

// UnixDial returns a dial function (for a WebSocket client's NetDialContext)
// that connects to the unix socket at path whatever address it is asked
// for, and writes prefix first, as a balancer's send-proxy-v2 writes its
// PROXY header before the request.
func UnixDial(path string, prefix []byte) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "unix", path)
		if err != nil {
			return nil, err
		}
		if _, err := c.Write(prefix); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}
