package wsclient

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"
)

// dialTLS runs a client TLS handshake over nc, bounded by o.Timeout. The
// server name (sent as SNI, and the name the certificate must carry) is
// o.TLS.ServerName, or addr's host when that is empty: what a browser does
// for a wss:// URL. A caller dialling many times sets ServerName once, so
// no config is copied per dial. On failure nc is closed.
func dialTLS(nc net.Conn, addr string, o Options) (net.Conn, error) {
	cfg := o.TLS
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(nc, cfg)
	if o.Timeout > 0 {
		_ = nc.SetDeadline(time.Now().Add(o.Timeout))
	}
	if err := tc.Handshake(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("wsclient: TLS handshake with %s: %w", addr, err)
	}
	if o.Timeout > 0 {
		_ = nc.SetDeadline(time.Time{})
	}
	return tc, nil
}
