package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"switchboard/loop"
)

// adminReadHeaderTimeout bounds a request head on the admin listener; it is
// loopback-only by default, but a stuck scraper must not pin a goroutine.
const adminReadHeaderTimeout = 5 * time.Second

// adminHandler serves the operator endpoints: /metrics always, pprof on
// request. They live on their own
// listener (loopback by default), never on the public one.
func adminHandler(srv *loop.Server, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		// Written whole into memory first: a scrape is a few tens of KiB,
		// and an error then answers 500 instead of a truncated 200.
		var b bytes.Buffer
		if err := writeAdminMetrics(&b, srv); err != nil {
			http.Error(w, "metrics unavailable", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(b.Bytes())
	})
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
func serveAdmin(addr string, relay *loop.Server, withPprof bool) (net.Addr, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	hs := &http.Server{Handler: adminHandler(relay, withPprof), ReadHeaderTimeout: adminReadHeaderTimeout}
	go func() { _ = hs.Serve(ln) }()
	return ln.Addr(), func() { _ = hs.Close() }, nil
}
