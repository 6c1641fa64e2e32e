package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// A --listen value of unix:/path serves the relay on a unix socket, for a
// balancer on the same box (docs/deployment.md, "Balancer and relay on one
// box: a unix socket"): one kernel socket pair per phone fewer than a
// loopback TCP hop.
const unixPrefix = "unix:"

// unixSocketMode lets the socket's owner and group connect (connect(2)
// needs write permission on the file) and nobody else: HAProxy reaches it
// through the group, and anyone who could connect could forge the PROXY
// header's client address.
const unixSocketMode fs.FileMode = 0o660

// maxUnixPath is the longest path a sockaddr_un holds: 108 bytes with the
// terminating NUL.
const maxUnixPath = 107

// staleProbeTimeout bounds the connect that tells a stale socket file from
// one a running relay listens on. A listener answers a unix connect at once
// (or refuses it with EAGAIN when its backlog is full); the bound only
// keeps a wedged peer from stalling start-up.
const staleProbeTimeout = time.Second

// unixPath is the socket path a --listen value names, if it is unix: form.
func unixPath(addr string) (string, bool) { return strings.CutPrefix(addr, unixPrefix) }

// checkUnixPath refuses a path bind(2) could never take, so the mistake is
// a configuration error (exit 2).
func checkUnixPath(path string) error {
	switch {
	case !filepath.IsAbs(path):
		return fmt.Errorf("invalid --listen %q: a unix socket path must be absolute, e.g. unix:/run/switchboard/relay.sock", unixPrefix+path)
	case len(path) > maxUnixPath:
		return fmt.Errorf("invalid --listen %q: a unix socket path is at most %d bytes, this one is %d", unixPrefix+path, maxUnixPath, len(path))
	}
	return nil
}

// listen opens the main listener: TCP for host:port, a unix socket for
// unix:/path.
func listen(addr string) (net.Listener, error) {
	path, ok := unixPath(addr)
	if !ok {
		return net.Listen("tcp", addr)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	// bind(2) applied the umask (systemd's UMask=0077 leaves 0700); set the
	// mode HAProxy's group needs. Closing the listener removes the file.
	if err := os.Chmod(path, unixSocketMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("setting mode %04o on %s: %w", unixSocketMode, path, err)
	}
	return ln, nil
}

// listenAddr names a listener in the "listening" log line as --listen
// takes it.
func listenAddr(ln net.Listener) string {
	if ua, ok := ln.Addr().(*net.UnixAddr); ok {
		return unixPrefix + ua.Name
	}
	return ln.Addr().String()
}

// removeStaleSocket removes the socket file a relay that died without
// closing its listener (SIGKILL, a crash) left at path, so a restart can
// bind again. It removes only a socket nothing listens on: a live relay's
// socket, or a file that is not a socket, is an error and stays.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; not removing it", path)
	}
	c, err := net.DialTimeout("unix", path, staleProbeTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: another process is listening on it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s exists and a connect to it did not say it is stale, so it stays: %v", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing the stale socket %s: %w", path, err)
	}
	return nil
}
