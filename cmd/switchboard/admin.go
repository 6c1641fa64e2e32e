package main

import (
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// adminReadHeaderTimeout bounds a request head on the admin listener; it is
// loopback-only by default, but a stuck scraper must not pin a goroutine.
const adminReadHeaderTimeout = 5 * time.Second

// adminHandler serves the operator endpoints. They live on their own
// listener (loopback by default), never on the public one.
func adminHandler(withPprof bool) http.Handler {
	mux := http.NewServeMux()
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// serveAdmin starts the admin listener; it returns the bound address.
func serveAdmin(addr string, withPprof bool) (net.Addr, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: adminHandler(withPprof), ReadHeaderTimeout: adminReadHeaderTimeout}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr(), func() { _ = srv.Close() }, nil
}
