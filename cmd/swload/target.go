package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"switchboard/internal/wsclient"
)

// The relay to load is --addr: host:port (plain WebSocket), or a ws:// or
// wss:// URL. wss:// dials TLS (a terminator such as deploy/haproxy.cfg in
// front of the relay), verified against the system roots, --ca-file's, or
// not at all with --insecure.

// Default ports of the two URL schemes.
const (
	wsPort  = "80"
	wssPort = "443"
)

// resolveTarget reads --addr as a URL when it has a scheme, leaving Addr
// host:port and TLS set for wss://, and builds the TLS config. It is
// idempotent: validate runs it on every copy of a Config.
func (c *Config) resolveTarget() error {
	if strings.Contains(c.Addr, "://") {
		u, err := url.Parse(c.Addr)
		if err != nil {
			return fmt.Errorf("--addr: %v", err)
		}
		port := wsPort
		switch u.Scheme {
		case "ws":
		case "wss":
			port = wssPort
			c.TLS = true
		default:
			return fmt.Errorf("--addr: scheme %q, want ws:// or wss:// (or host:port)", u.Scheme)
		}
		// swload dials the relay's own paths (/v1/server, /v1/client).
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return fmt.Errorf("--addr %q: give only the scheme, host and port; swload dials /v1/server and /v1/client itself", c.Addr)
		}
		if u.Port() != "" {
			port = u.Port()
		}
		c.Addr = net.JoinHostPort(u.Hostname(), port)
	}
	switch {
	case !c.TLS && (c.CAFile != "" || c.Insecure):
		return errors.New("--ca-file and --insecure apply to a wss:// --addr only")
	case c.CAFile != "" && c.Insecure:
		return errors.New("--ca-file and --insecure together: --insecure would ignore the file")
	case !c.TLS || c.tlsConf != nil:
		return nil
	}
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("--addr: %v", err)
	}
	conf := &tls.Config{
		// Set once here so that wsclient need not copy the config per dial.
		ServerName: host,
		// What the relay speaks after TLS; deploy/haproxy.cfg offers only it.
		NextProtos:         []string{"http/1.1"},
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: c.Insecure,
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return fmt.Errorf("--ca-file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--ca-file %s holds no PEM certificate", c.CAFile)
		}
		conf.RootCAs = pool
	}
	c.tlsConf = conf
	return nil
}

// target is --addr as the report shows it: the URL for wss://, else
// host:port as before.
func (c *Config) target() string {
	if c.TLS {
		return "wss://" + c.Addr
	}
	return c.Addr
}

// dialOptions are how every binary and phone dials the relay.
func (c *Config) dialOptions(local net.Addr) wsclient.Options {
	return wsclient.Options{Timeout: c.DialTimeout, Local: local, TLS: c.tlsConf}
}

// insecureWarning is printed on stderr at the start of a run with
// --insecure, so a run against a real deployment cannot skip verification
// unnoticed.
const insecureWarning = "swload: WARNING: --insecure: the relay's TLS certificate is NOT verified; anyone on the path can read and change this traffic. Use --ca-file for a self-signed certificate instead."
