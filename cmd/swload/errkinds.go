package main

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"switchboard/internal/wsclient"
)

// What goes wrong is counted by kind: a short name for what happened
// (an HTTP status, a close code, a socket error class), never an address or
// an id, so counts from every connection and worker process add up.

// kinds counts events by kind; kinds are rare (errors), so a mutex is fine.
type kinds struct {
	mu    sync.Mutex
	m     map[string]int64
	total atomic.Int64
}

func (k *kinds) add(kind string, n int64) {
	if n <= 0 {
		return
	}
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[string]int64)
	}
	k.m[kind] += n
	k.mu.Unlock()
	k.total.Add(n)
}

func (k *kinds) snapshot() map[string]int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make(map[string]int64, len(k.m))
	for kk, v := range k.m {
		out[kk] = v
	}
	return out
}

// ---- classification of failures ----

// closeCode reads a close frame's code (1005 when it has none).
func closeCode(payload []byte) int {
	if len(payload) < 2 {
		return 1005
	}
	return int(binary.BigEndian.Uint16(payload))
}

// dialKind names a failed dial: its HTTP status or the socket error.
func dialKind(err error) string {
	var se *wsclient.StatusError
	if errors.As(err, &se) {
		return "http_" + strconv.Itoa(se.Code)
	}
	return "dial_" + ioKind(err)
}

// ioKind names a socket error without its addresses.
func ioKind(err error) string {
	var ne net.Error
	var (
		verr *tls.CertificateVerificationError
		rerr tls.RecordHeaderError
		aerr tls.AlertError
	)
	switch {
	// TLS first: a handshake's error may wrap a socket error too.
	case errors.As(err, &verr):
		return "tls_verify" // the certificate: --ca-file, or --insecure
	case errors.As(err, &rerr):
		return "tls_not_tls" // the other end does not speak TLS: ws:// instead?
	case errors.As(err, &aerr):
		return "tls_alert" // the terminator refused the handshake
	}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken_pipe"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "no_source_port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too_many_files"
	case errors.Is(err, net.ErrClosed):
		return "closed"
	}
	return "other"
}

// readKind names a failed read: the close code the relay sent, or the
// socket error.
func readKind(err error, payload []byte) string {
	if errors.Is(err, wsclient.ErrClosed) {
		return "close_" + strconv.Itoa(closeCode(payload))
	}
	return ioKind(err)
}

func isTimeout(err error) bool { return ioKind(err) == "timeout" }
