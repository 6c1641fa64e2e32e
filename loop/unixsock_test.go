package loop_test

// The relay on a unix socket, as a balancer on the same box reaches it
// (docs/deployment.md, "Balancer and relay on one box: a unix socket"):
// every connection starts with a PROXY v2 header naming the client, and
// the relay keys and logs by it.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"switchboard/internal/relaytest"
	"switchboard/loop"
)

// unixRelay serves cfg on a unix socket in a fresh directory and shuts it
// down when the test ends; it returns the server and the socket's path.
func unixRelay(t *testing.T, cfg loop.Config) (*loop.Server, string) {
	t.Helper()
	srv, err := loop.New(cfg)
	if err != nil {
		t.Fatalf("loop.New: %v", err)
	}
	path := filepath.Join(t.TempDir(), "relay.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv, path
}

// unixDial upgrades over the unix socket at path, writing hdr (a PROXY v2
// header) before the request as HAProxy's send-proxy-v2 does.
func unixDial(t *testing.T, path string, hdr []byte, reqPath string, h http.Header) (*peer, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: testTimeout, NetDialContext: relaytest.UnixDial(path, hdr)}
	c, resp, err := d.Dial("ws://relay.test"+reqPath, h)
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(64 << 20)
	return newPeer(t, c), resp, nil
}

func mustUnixDial(t *testing.T, path string, hdr []byte, reqPath string, h http.Header) *peer {
	t.Helper()
	p, resp, err := unixDial(t, path, hdr, reqPath, h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s over %s: %v (status %d)", reqPath, path, err, status)
	}
	return p
}

// unixAttempt sends prefix and one upgrade request (or /healthz) over the
// unix socket and returns the status answered.
func unixAttempt(t *testing.T, path string, prefix []byte, reqPath string) int {
	t.Helper()
	c, err := net.DialTimeout("unix", path, testTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	var head string
	switch reqPath {
	case "/healthz":
		head = requestHead(reqPath)
	case "/v1/server":
		head = requestHead(reqPath, withUpgrade(rawBinaryLines("unix-"+t.Name()))...)
	default:
		head = requestHead(reqPath, withUpgrade(rawPhoneLines("nobody-home"))...)
	}
	if _, err := c.Write(append(append([]byte(nil), prefix...), head...)); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %s: %v", reqPath, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A binary and a phone, each behind its own PROXY source, exchange messages
// both ways (one larger than the relay's netpoll nodes and a socket
// buffer), the log lines name the PROXY source as remote and "unix" as
// proxy, and a shutdown closes both with 1001 and removes the socket file.
func TestUnixSocketRelaysBothWays(t *testing.T) {
	var sink relaytest.LogSink
	log := slog.New(slog.NewJSONHandler(&sink, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, path := unixRelay(t, loop.Config{ProxyProtocol: true, Logger: log})

	b := mustUnixDial(t, path, admProxyHeader("192.0.2.10"), "/v1/server", binaryHeaders("unix-both"))
	p := mustUnixDial(t, path, admProxyHeader("2001:db8:7::1"), "/v1/client", phoneHeaders("unix-both"))
	roundTrip(t, p, b, `{"hello":"over a unix socket"}`)
	big := `{"blob":"` + strings.Repeat("u", 200<<10) + `"}`
	roundTrip(t, p, b, big)

	for msg, want := range map[string]string{"binary connected": "192.0.2.10:40000", "phone connected": "[2001:db8:7::1]:40000"} {
		line, ok := sink.WaitLine(nil, testTimeout, func(l string) bool { return strings.Contains(l, `"msg":"`+msg+`"`) })
		if !ok {
			t.Fatalf("no %q line:\n%s", msg, sink.String())
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["remote"] != want || rec["proxy"] != "unix" {
			t.Errorf("%s: remote %#v proxy %#v, want %q and \"unix\"", msg, rec["remote"], rec["proxy"], want)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	b.expectClose(t, 1001, "shutting down")
	p.expectClose(t, 1001, "shutting down")
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after shutdown: %v, want it removed", err)
	}
}

// The rate limit is keyed on the PROXY header's source, not on the unix
// socket every connection shares. LOCAL headers (HAProxy's health checks)
// carry no source: they share the bucket of 127.0.0.1, the box itself, and
// /healthz is never limited.
func TestUnixSocketRateLimitKeysOnProxySource(t *testing.T) {
	_, path := unixRelay(t, loop.Config{ProxyProtocol: true, RateLimitBurst: 1, RateLimitInterval: time.Hour})
	admExpect(t, "first from 192.0.2.1", unixAttempt(t, path, admProxyHeader("192.0.2.1"), "/v1/client"), 101)
	admExpect(t, "second from 192.0.2.1", unixAttempt(t, path, admProxyHeader("192.0.2.1"), "/v1/server"), 429)
	admExpect(t, "first from 192.0.2.2", unixAttempt(t, path, admProxyHeader("192.0.2.2"), "/v1/client"), 101)
	admExpect(t, "first from 2001:db8:1::1", unixAttempt(t, path, admProxyHeader("2001:db8:1::1"), "/v1/client"), 101)
	admExpect(t, "first LOCAL", unixAttempt(t, path, admProxyHeader(""), "/v1/client"), 101)
	admExpect(t, "second LOCAL (127.0.0.1's bucket)", unixAttempt(t, path, admProxyHeader(""), "/v1/client"), 429)
	admExpect(t, "PROXY from 127.0.0.1 (the LOCAL bucket)", unixAttempt(t, path, admProxyHeader("127.0.0.1"), "/v1/client"), 429)
	for range 3 {
		admExpect(t, "healthz behind LOCAL", unixAttempt(t, path, admProxyHeader(""), "/healthz"), 200)
	}
}

// Without a PROXY header a unix connection is closed unanswered, as on TCP.
func TestUnixSocketWithoutProxyHeaderClosesSilently(t *testing.T) {
	srv, path := unixRelay(t, loop.Config{ProxyProtocol: true})
	c, err := net.DialTimeout("unix", path, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := c.Write([]byte(requestHead("/healthz"))); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, %v: want EOF with nothing answered", n, err)
	}
	if got := srv.Counters().Reject(loop.RejectBadProxyHeader); got != 1 {
		t.Fatalf("RejectBadProxyHeader = %d, want 1", got)
	}
}
