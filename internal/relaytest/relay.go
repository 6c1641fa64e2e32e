// Package relaytest starts Switchboard relays for tests, in this process on
// a loopback port or as the built command in a process of its own, and
// collects what they (or any other process a test runs) log.
package relaytest

import (
	"context"
	"net"
	"testing"
	"time"

	"switchboard/loop"
)

// Relay is a relay serving in this process for one test.
type Relay struct {
	*loop.Server
	Addr string // host:port it listens on
}

// Start serves a relay for cfg on a loopback port and shuts it down when the
// test ends. A test may shut it down itself first.
func Start(t testing.TB, cfg loop.Config) *Relay {
	t.Helper()
	srv, err := loop.New(cfg)
	if err != nil {
		t.Fatalf("loop.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return &Relay{Server: srv, Addr: ln.Addr().String()}
}
