package main

// The relay command on a unix socket (--listen unix:/path): the
// configuration errors, the socket file's mode and life (a stale one is
// removed, a live one is left alone, the file goes at exit), and a binary
// and a phone through PROXY v2 headers, written here and by HAProxy.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"switchboard/internal/haproxycfg"
	"switchboard/internal/relaytest"
)

// unixTestTimeout bounds each wait in these tests.
const unixTestTimeout = 10 * time.Second

// proxyV2 is a PROXY protocol v2 header (PROXY command, TCP over IPv4) for
// the client src:port, as HAProxy's send-proxy-v2 writes it.
func proxyV2(src string, port uint16) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr("192.0.2.250").As4()
	b = append(append(b, s[:]...), d[:]...)
	b = binary.BigEndian.AppendUint16(b, port)
	return binary.BigEndian.AppendUint16(b, 443)
}

// unixWS upgrades over the socket at path after writing hdr.
func unixWS(path string, hdr []byte, reqPath string, h http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: unixTestTimeout, NetDialContext: relaytest.UnixDial(path, hdr)}
	return d.Dial("ws://relay.test"+reqPath, h)
}

func binaryHeader(id string) http.Header {
	return http.Header{"X-Pyrycode-Server": {id}, "X-Pyrycode-Version": {"2"}, "User-Agent": {"unix-binary/1"}}
}

func phoneHeader(id string) http.Header {
	return http.Header{"X-Pyrycode-Server": {id}, "X-Pyrycode-Token": {"tok"}, "User-Agent": {"unix-phone/1"}}
}

// pairRoundTrip sends msg from the phone, checks the binary's envelope and
// sends it back, and checks the phone gets it.
func pairRoundTrip(t *testing.T, phone, bin *websocket.Conn, msg string) {
	t.Helper()
	for _, c := range []*websocket.Conn{phone, bin} {
		_ = c.NetConn().SetDeadline(time.Now().Add(unixTestTimeout))
	}
	if err := phone.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("phone write: %v", err)
	}
	_, env, err := bin.ReadMessage()
	if err != nil {
		t.Fatalf("binary read: %v", err)
	}
	s := string(env)
	if !strings.HasPrefix(s, `{"conn_id":"`) || !strings.HasSuffix(s, `,"frame":`+msg+`}`) {
		t.Fatalf("binary got %s", s)
	}
	if err := bin.WriteMessage(websocket.TextMessage, env); err != nil {
		t.Fatalf("binary write: %v", err)
	}
	if _, got, err := phone.ReadMessage(); err != nil || string(got) != msg {
		t.Fatalf("phone got %q, %v; want %s", got, err, msg)
	}
}

func TestUnixListenConfigErrorsExit2(t *testing.T) {
	long := "/" + strings.Repeat("s", maxUnixPath)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "unix:/run/switchboard/relay.sock"}, "needs --proxy-protocol"},
		{[]string{"--listen", "unix:relay.sock", "--proxy-protocol"}, "must be absolute"},
		{[]string{"--listen", "unix:", "--proxy-protocol"}, "must be absolute"},
		{[]string{"--listen", "unix:" + long, "--proxy-protocol"}, "at most 107 bytes"},
	} {
		code, stdout, stderr := runEnv(t, nil, tc.args...)
		if code != 2 || stdout != "" {
			t.Errorf("%v: exit %d, stdout %q; want 2", tc.args, code, stdout)
		}
		oneLine(t, stderr, tc.want)
	}
	// The environment form is checked the same way.
	code, _, stderr := runEnv(t, map[string]string{"SWITCHBOARD_LISTEN": "unix:/run/switchboard/relay.sock"})
	if code != 2 {
		t.Errorf("SWITCHBOARD_LISTEN=unix:… without proxy protocol: exit %d, want 2", code)
	}
	oneLine(t, stderr, "needs --proxy-protocol")
}

// The relay as a process on a unix socket: the file has mode 0660, a binary
// and a phone each behind a PROXY header exchange messages both ways, the
// rate limit keys on the header's source, the logs name it with
// proxy=unix, and SIGTERM removes the file.
func TestUnixListenProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.sock")
	p := relaytest.Switchboard(t, "--listen", "unix:"+path, "--proxy-protocol", "--admin-listen", "",
		"--rate-limit-burst", "2", "--rate-limit-interval", "1h", "--log-level", "debug")
	if p.Addr != "unix:"+path {
		t.Fatalf("listening on %q, want unix:%s", p.Addr, path)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket file mode %v, want a socket with 0660", fi.Mode())
	}

	bin, _, err := unixWS(path, proxyV2("198.51.100.1", 5001), "/v1/server", binaryHeader("unix-proc"))
	if err != nil {
		t.Fatalf("binary: %v", err)
	}
	defer bin.Close()
	phone, _, err := unixWS(path, proxyV2("198.51.100.1", 5002), "/v1/client", phoneHeader("unix-proc"))
	if err != nil {
		t.Fatalf("phone: %v", err)
	}
	defer phone.Close()
	pairRoundTrip(t, phone, bin, `{"n":1}`)
	pairRoundTrip(t, phone, bin, `{"blob":"`+strings.Repeat("x", 100<<10)+`"}`)

	// 198.51.100.1 has spent its burst of 2; another source has its own.
	if _, resp, err := unixWS(path, proxyV2("198.51.100.1", 5003), "/v1/client", phoneHeader("unix-proc")); err == nil || resp == nil || resp.StatusCode != 429 {
		t.Fatalf("third attempt from 198.51.100.1: %v %v, want 429", resp, err)
	}
	other, _, err := unixWS(path, proxyV2("198.51.100.2", 5004), "/v1/client", phoneHeader("unix-proc"))
	if err != nil {
		t.Fatalf("first attempt from 198.51.100.2: %v", err)
	}
	other.Close()

	line, ok := p.Logs.WaitLine(p.Exited(), unixTestTimeout, func(l string) bool { return strings.Contains(l, "msg=\"binary connected\"") })
	if !ok || !strings.Contains(line, "remote=198.51.100.1:5001") || !strings.Contains(line, "proxy=unix") {
		t.Fatalf("binary connected line %q: want remote=198.51.100.1:5001 proxy=unix\n%s", line, p.Logs.Tail())
	}
	bin.Close() // nobody left to answer the drain's close frames
	phone.Close()
	p.Stop(unixTestTimeout)
	if err := p.Err(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.Logs.Tail())
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file after exit: %v, want it removed", err)
	}
}

// A socket file left by a relay that was killed is removed at the next
// start; one a live process listens on, or a file that is not a socket, is
// left alone and the start fails with exit 1 (systemd retries).
func TestUnixListenStaleSocketFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.sock")
	args := []string{"--listen", "unix:" + path, "--proxy-protocol", "--admin-listen", ""}

	// A relay killed with SIGKILL leaves its file; the next start takes it.
	first := relaytest.Switchboard(t, args...)
	first.Kill()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("after SIGKILL the socket file should remain: %v", err)
	}
	second := relaytest.Switchboard(t, args...)
	c, err := net.DialTimeout("unix", path, unixTestTimeout)
	if err != nil {
		t.Fatalf("the restarted relay is not reachable on %s: %v", path, err)
	}
	c.Close()

	// Now a relay listens there: a second start must not steal the path.
	code, _, stderr := runEnv(t, nil, args...)
	if code != 1 {
		t.Errorf("start over a live socket: exit %d, want 1", code)
	}
	oneLine(t, stderr, "another process is listening on it")
	if c, err := net.DialTimeout("unix", path, unixTestTimeout); err != nil {
		t.Fatalf("the running relay lost its socket: %v", err)
	} else {
		c.Close()
	}
	second.Stop(unixTestTimeout)

	// A regular file at the path is not ours to remove.
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runEnv(t, nil, args...)
	if code != 1 {
		t.Errorf("start over a regular file: exit %d, want 1", code)
	}
	oneLine(t, stderr, "is not a socket")
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
		t.Fatalf("the regular file was touched: %q %v", b, err)
	}
}

// A stale file from a listener closed without unlinking (what a crash
// leaves) is told apart by a refused connect, in-process.
func TestRemoveStaleSocketOnlyWhenRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	if err := removeStaleSocket(path); err == nil || !strings.Contains(err.Error(), "listening") {
		t.Fatalf("live listener: %v, want a refusal", err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if err := removeStaleSocket(path); err != nil {
		t.Fatalf("stale file: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stale file still there: %v", err)
	}
	if err := removeStaleSocket(path); err != nil {
		t.Fatalf("no file: %v", err)
	}
	// A socket file nobody may connect to (not ours) stays.
	if os.Geteuid() != 0 {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if err := os.Chmod(path, 0); err != nil {
			t.Fatal(err)
		}
		if err := removeStaleSocket(path); err == nil || !errors.Is(err, syscall.EACCES) && !strings.Contains(err.Error(), "stays") {
			t.Fatalf("unreachable socket: %v, want it left alone", err)
		}
	}
}

const unixHAProxyConfig = `global
    maxconn 200
    log stderr format raw local0 notice

defaults
    mode http
    log global
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    timeout tunnel 30s
    timeout check 1s

frontend relay
    bind %s
    default_backend relays

backend relays
    balance hdr(X-Pyrycode-Server)
    hash-type consistent
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host relay
    http-check expect status 200
    default-server send-proxy-v2 check inter 200ms fall 1 rise 1
%s
`

// shippedUnixServer is deploy/haproxy.cfg's commented unix@ server line,
// uncommented, with path for the shipped socket path, and checks that the
// shipped default-server sends PROXY v2 to it.
func shippedUnixServer(t *testing.T, path string) string {
	t.Helper()
	cfg := readFile(t, haproxyCfgFile)
	m := regexp.MustCompile(`(?m)^\s*#\s*(server \S+ unix@)(/run/switchboard/relay\.sock)( .*)$`).FindStringSubmatch(cfg)
	if m == nil {
		t.Fatalf("%s: no commented `server … unix@/run/switchboard/relay.sock` line", haproxyCfgFile)
	}
	if !regexp.MustCompile(`(?m)^\s*default-server .*\bsend-proxy-v2\b`).MatchString(cfg) {
		t.Fatalf("%s: the default-server line does not send PROXY v2", haproxyCfgFile)
	}
	return "    " + m[1] + path + m[3]
}

// HAProxy in front of a relay on the same box over a unix socket with
// send-proxy-v2 (deploy/haproxy.cfg's commented unix@ line): the health
// check (PROXY LOCAL) passes, a binary and a phone pair through it, and
// the relay logs the client's TCP address as remote, proxy=unix.
func TestUnixSocketBehindHAProxy(t *testing.T) {
	hap := haproxycfg.Path()
	if hap == "" {
		t.Skip("haproxy not on PATH: install it (apt-get install haproxy) to run this test")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.sock")
	node := relaytest.Switchboard(t, "--listen", "unix:"+path, "--proxy-protocol", "--admin-listen", "", "--rate-limit-burst", "0")

	fe := relaytest.FreeAddr(t)
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, unixHAProxyConfig, fe, shippedUnixServer(t, path)), 0o644); err != nil {
		t.Fatal(err)
	}
	hp := relaytest.Exec(t, relaytest.Command{Path: hap, Args: []string{"-f", cfgPath, "-db"}})
	waitHAProxy(t, hp, fe)

	d := websocket.Dialer{HandshakeTimeout: unixTestTimeout}
	bin, _, err := d.Dial("ws://"+fe+"/v1/server", binaryHeader("unix-haproxy"))
	if err != nil {
		t.Fatalf("binary through haproxy: %v\n%s\n%s", err, hp.Logs.Tail(), node.Logs.Tail())
	}
	defer bin.Close()
	phone, _, err := d.Dial("ws://"+fe+"/v1/client", phoneHeader("unix-haproxy"))
	if err != nil {
		t.Fatalf("phone through haproxy: %v", err)
	}
	defer phone.Close()
	for i := range 3 {
		pairRoundTrip(t, phone, bin, fmt.Sprintf(`{"through":"haproxy","seq":%d}`, i))
	}
	// HAProxy's PROXY header names the binary's own TCP address.
	binLocal := bin.LocalAddr().String()
	line, ok := node.Logs.WaitLine(node.Exited(), unixTestTimeout, func(l string) bool { return strings.Contains(l, "msg=\"binary connected\"") })
	if !ok || !strings.Contains(line, "remote="+binLocal) || !strings.Contains(line, "proxy=unix") {
		t.Fatalf("binary connected line %q: want remote=%s proxy=unix", line, binLocal)
	}
}
