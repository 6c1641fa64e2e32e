package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"switchboard/loop"
)

// adminReadHeaderTimeout bounds a request head on the admin listener; it is
// loopback-only by default, but a stuck scraper must not pin a goroutine.
const adminReadHeaderTimeout = 5 * time.Second

// adminConfig is what the --admin-* flags ask of the admin listener.
type adminConfig struct {
	addr          string
	pprof         bool
	tlsCertFile   string // with tlsKeyFile: serve HTTPS
	tlsKeyFile    string
	basicAuthFile string // user:bcrypt-hash lines (adminauth.go)
}

// admin is an admin listener's configuration with its files read: what
// loadAdmin could refuse at start is refused before anything listens.
type admin struct {
	cfg  adminConfig
	tls  *tls.Config // nil: plain HTTP
	auth *basicAuth  // nil: no authentication
}

// loadAdmin reads the certificate and the credentials file. Its errors are
// configuration errors (exit 2) and name the flag and the file, never a
// credential.
func loadAdmin(cfg adminConfig) (*admin, error) {
	a := &admin{cfg: cfg}
	switch {
	case (cfg.tlsCertFile == "") != (cfg.tlsKeyFile == ""):
		return nil, errors.New("--admin-tls-cert-file and --admin-tls-key-file go together: set both or neither")
	case cfg.tlsCertFile != "":
		cert, err := tls.LoadX509KeyPair(cfg.tlsCertFile, cfg.tlsKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--admin-tls-cert-file %s / --admin-tls-key-file %s: %v", cfg.tlsCertFile, cfg.tlsKeyFile, err)
		}
		a.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if cfg.basicAuthFile != "" {
		auth, err := loadBasicAuth(cfg.basicAuthFile)
		if err != nil {
			return nil, fmt.Errorf("--admin-basic-auth-file: %v", err)
		}
		a.auth = auth
	}
	return a, nil
}

// handler serves the operator endpoints: /metrics always, pprof on request,
// all behind basic auth when it is configured. They live on their own
// listener (loopback by default), never on the public one.
func (a *admin) handler(srv *loop.Server) http.Handler {
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
	if a.cfg.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if a.auth != nil {
		return a.auth.wrap(mux)
	}
	return mux
}

// serve starts the admin listener; it returns the bound address.
func (a *admin) serve(relay *loop.Server) (net.Addr, func(), error) {
	ln, err := net.Listen("tcp", a.cfg.addr)
	if err != nil {
		return nil, nil, err
	}
	addr, stop := a.serveOn(ln, relay)
	return addr, stop, nil
}

// serveOn serves the admin endpoints on ln, bound here or inherited from
// the process this one upgraded. stop closes this process's descriptor
// only: a successor holding the same socket keeps serving it.
func (a *admin) serveOn(ln net.Listener, relay *loop.Server) (net.Addr, func()) {
	hs := &http.Server{Handler: a.handler(relay), ReadHeaderTimeout: adminReadHeaderTimeout, TLSConfig: a.tls}
	go func() {
		if a.tls != nil {
			_ = hs.ServeTLS(ln, "", "") // the certificate is in TLSConfig
			return
		}
		_ = hs.Serve(ln)
	}()
	return ln.Addr(), func() { _ = hs.Close() }
}

// serveAdmin starts a plain admin listener on addr (no TLS, no auth).
func serveAdmin(addr string, relay *loop.Server, withPprof bool) (net.Addr, func(), error) {
	a, err := loadAdmin(adminConfig{addr: addr, pprof: withPprof})
	if err != nil {
		return nil, nil, err
	}
	return a.serve(relay)
}
