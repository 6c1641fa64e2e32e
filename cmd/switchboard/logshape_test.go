package main

// The log's shape, on the real process in both formats: every key has one
// type (role a word, remote and proxy "ip:port", durations as text), the
// binary lifecycle lines carry their fields, and text and JSON write the
// same keys for the same events (docs/operations.md, Logs).

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"switchboard/internal/relaytest"
	"switchboard/internal/wsclient"
)

const (
	shapeWait  = 10 * time.Second        // bounds each wait for a line or a frame
	shapeGrace = 1500 * time.Millisecond // long enough to reclaim on a loaded machine, short enough to wait out
	shapeSID   = "log-shape"
)

// The binary's connections come through a pretend load balancer: each
// PROXY v2 header names this client address, one source port per
// connection, so each connection's lines are told apart by remote.
var shapeClient = netip.MustParseAddr("203.0.113.7")

// durationKeys are the keys whose values are durations.
var durationKeys = []string{"away", "grace_period", "after", "rate_limit_interval", "binary_max_lifetime"}

// logLine is one parsed line; JSON keeps its types, text's values are all
// strings.
type logLine map[string]any

func (l logLine) str(k string) string { s, _ := l[k].(string); return s }

// proxyV2From is a PROXY v2 header (PROXY, TCP over IPv4) naming src.
func proxyV2From(src netip.AddrPort) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
	s := src.Addr().As4()
	b = append(b, s[:]...)
	b = append(b, 127, 0, 0, 1)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, 8080)
}

// parseLogLine parses one line of either format.
func parseLogLine(format, line string) (logLine, error) {
	if format == "json" {
		var l logLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			return nil, fmt.Errorf("not one JSON object: %v", err)
		}
		return l, nil
	}
	l := logLine{}
	for rest := line; rest != ""; rest = strings.TrimPrefix(rest, " ") {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 || strings.ContainsAny(rest[:eq], " \"") {
			return nil, fmt.Errorf("no key=value at %q", rest)
		}
		key := rest[:eq]
		rest = rest[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil, fmt.Errorf("bad quoted value for %s: %v", key, err)
			}
			val, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			end := strings.IndexByte(rest, ' ')
			if end < 0 {
				end = len(rest)
			}
			val, rest = rest[:end], rest[end:]
		}
		l[key] = val
	}
	return l, nil
}

// shapeRun is one relay process and the log lines it wrote.
type shapeRun struct {
	format string
	proc   *relaytest.Process
}

// wait returns the first line with msg whose other fields match want.
func (r *shapeRun) wait(t *testing.T, msg string, want map[string]string) logLine {
	t.Helper()
	var found logLine
	_, ok := r.proc.Logs.WaitLine(r.proc.Exited(), shapeWait, func(s string) bool {
		l, err := parseLogLine(r.format, s)
		if err != nil || l.str("msg") != msg {
			return false
		}
		for k, v := range want {
			if l.str(k) != v {
				return false
			}
		}
		found = l
		return true
	})
	if !ok {
		t.Fatalf("%s: no %q line with %v after %v:\n%s", r.format, msg, want, shapeWait, r.proc.Logs.Tail())
	}
	return found
}

func (r *shapeRun) dial(t *testing.T, header []byte, path string, lines ...string) *wsclient.Client {
	t.Helper()
	c, err := wsclient.DialTCP(r.proc.Addr, wsclient.Options{Timeout: shapeWait})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.Conn.SetDeadline(time.Now().Add(shapeWait))
	if _, err := c.Conn.Write(header); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Upgrade(wsclient.Request{Path: path, Host: "relay.test", Lines: lines}); err != nil {
		t.Fatalf("%s %s: %v", r.format, path, err)
	}
	return c
}

func (r *shapeRun) binary(t *testing.T, port uint16) *wsclient.Client {
	return r.dial(t, proxyV2From(netip.AddrPortFrom(shapeClient, port)), "/v1/server",
		"X-Pyrycode-Server: "+shapeSID, "X-Pyrycode-Version: 2", "User-Agent: log-shape-binary/1")
}

// phone comes through with a LOCAL header: its remote is its socket's.
func (r *shapeRun) phone(t *testing.T) *wsclient.Client {
	return r.dial(t, proxyV2Local, "/v1/client", "X-Pyrycode-Server: "+shapeSID, "X-Pyrycode-Token: tok", "User-Agent: log-shape-phone/1")
}

func readText(t *testing.T, c *wsclient.Client) string {
	t.Helper()
	op, p, err := c.ReadFrame()
	if err != nil || op != wsclient.OpText {
		t.Fatalf("want a text frame, got op %#x %q %v", op, p, err)
	}
	return string(p)
}

// leave sends a close frame and waits for the relay's answer.
func leave(t *testing.T, c *wsclient.Client) {
	t.Helper()
	if err := c.WriteFrame(wsclient.OpClose, wsclient.CloseBody(1000, "")); err != nil {
		t.Fatal(err)
	}
	if code, _, err := c.ReadClose(); err != nil || code != 1000 {
		t.Fatalf("close answered %d, %v", code, err)
	}
}

// drive runs one relay in format through a binary's whole life and returns
// every line it logged, parsed.
func drive(t *testing.T, format string) []logLine {
	p := relaytest.Exec(t, relaytest.Command{
		Path: relaytest.Build(t, "switchboard/cmd/switchboard"),
		Args: []string{"--listen", "127.0.0.1:0", "--admin-listen", "", "--log-format", format, "--log-level", "debug",
			"--proxy-protocol", "--rate-limit-burst", "0", "--grace-period", shapeGrace.String()},
		Env: relaytest.CleanEnv(),
	})
	r := &shapeRun{format: format, proc: p}
	p.Addr = r.wait(t, "listening", nil).str("addr")

	// Connect, traffic both ways.
	b1 := r.binary(t, 4711)
	connected := r.wait(t, "binary connected", map[string]string{"remote": "203.0.113.7:4711"})
	if proxy, err := netip.ParseAddrPort(connected.str("proxy")); err != nil || !proxy.Addr().IsLoopback() {
		t.Errorf("%s: binary connected through PROXY v2: proxy %q, want the socket peer on loopback", format, connected.str("proxy"))
	}
	ph := r.phone(t)
	r.wait(t, "phone connected", nil)
	if err := ph.WriteText([]byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	env := readText(t, b1)
	connID := env[len(`{"conn_id":"`):strings.Index(env, `","frame"`)]
	if err := b1.WriteText(fmt.Appendf(nil, `{"conn_id":%q,"frame":{"n":2}}`, connID)); err != nil {
		t.Fatal(err)
	}
	if got := readText(t, ph); got != `{"n":2}` {
		t.Fatalf("phone got %s", got)
	}

	// Leave, grace, reclaim: the phone held over the window is closed.
	leave(t, b1)
	r.wait(t, "binary left", map[string]string{"remote": "203.0.113.7:4711", "server_id": shapeSID})
	r.wait(t, "grace started", map[string]string{"remote": "203.0.113.7:4711", "grace_period": shapeGrace.String()})
	b2 := r.binary(t, 4712)
	reclaimed := r.wait(t, "grace reclaimed", map[string]string{"remote": "203.0.113.7:4712", "server_id": shapeSID})
	if away, err := time.ParseDuration(reclaimed.str("away")); err != nil || away <= 0 || away > shapeGrace {
		t.Errorf("%s: grace reclaimed away=%q, want a duration in (0, %v]", format, reclaimed.str("away"), shapeGrace)
	}
	r.wait(t, "binary connected", map[string]string{"remote": "203.0.113.7:4712"})
	if _, _, err := ph.ReadClose(); err != nil {
		t.Fatalf("phone of the reclaimed slot: %v", err)
	}
	_ = ph.Close() // ends the relay's linger at once

	// A new phone, then the binary leaves for good: the window expires and
	// takes the phone with it.
	ph2 := r.phone(t)
	r.wait(t, "phone connected", map[string]string{"remote": ph2.Conn.LocalAddr().String()})
	leave(t, b2)
	r.wait(t, "grace started", map[string]string{"remote": "203.0.113.7:4712"})
	expired := r.wait(t, "grace expired", map[string]string{"remote": "203.0.113.7:4712", "server_id": shapeSID})
	if n := fmt.Sprint(expired["phones_dropped"]); n != "1" {
		t.Errorf("%s: grace expired phones_dropped=%s, want 1", format, n)
	}
	if _, _, err := ph2.ReadClose(); err != nil {
		t.Fatalf("phone of the expired slot: %v", err)
	}
	_ = ph2.Close()

	p.Stop(shapeWait)
	if err := p.Err(); err != nil {
		t.Fatalf("%s relay exited: %v\n%s", format, err, p.Logs.Tail())
	}
	var lines []logLine
	for _, s := range strings.Split(strings.TrimSpace(p.Logs.String()), "\n") {
		l, err := parseLogLine(format, s)
		if err != nil {
			t.Fatalf("%s: %v: %q", format, err, s)
		}
		checkShape(t, format, s, l)
		lines = append(lines, l)
	}
	return lines
}

// checkShape asserts each key's type: one line, either format.
func checkShape(t *testing.T, format, raw string, l logLine) {
	t.Helper()
	for k, v := range l {
		switch v.(type) {
		case map[string]any, []any:
			t.Errorf("%s: %s is not a scalar: %s", format, k, raw)
		}
	}
	if v, ok := l["role"]; ok {
		if s, _ := v.(string); !slices.Contains([]string{"binary", "phone", "none"}, s) {
			t.Errorf("%s: role %#v is not a role's name: %s", format, v, raw)
		}
	}
	for _, k := range []string{"remote", "proxy"} {
		if v, ok := l[k]; ok {
			s, _ := v.(string)
			if _, err := netip.ParseAddrPort(s); err != nil {
				t.Errorf("%s: %s %#v is not ip:port: %s", format, k, v, raw)
			}
		}
	}
	for _, k := range durationKeys {
		if v, ok := l[k]; ok {
			s, _ := v.(string)
			if _, err := time.ParseDuration(s); err != nil {
				t.Errorf("%s: %s %#v is not a duration: %s", format, k, v, raw)
			}
		}
	}
}

// keysByMsg is, for each msg, the union of the keys of its lines.
func keysByMsg(lines []logLine) map[string][]string {
	sets := map[string]map[string]bool{}
	for _, l := range lines {
		m := l.str("msg")
		if sets[m] == nil {
			sets[m] = map[string]bool{}
		}
		for k := range l {
			sets[m][k] = true
		}
	}
	out := map[string][]string{}
	for m, set := range sets {
		for k := range set {
			out[m] = append(out[m], k)
		}
		slices.Sort(out[m])
	}
	return out
}

func TestLogShapeSameInTextAndJSON(t *testing.T) {
	jsonKeys := keysByMsg(drive(t, "json"))
	textKeys := keysByMsg(drive(t, "text"))
	lifecycle := []string{"listening", "binary connected", "phone connected", "binary left", "grace started",
		"grace reclaimed", "grace expired", "stopping", "draining", "stopped"}
	for _, m := range lifecycle {
		if jsonKeys[m] == nil || textKeys[m] == nil {
			t.Errorf("%q missing: json %v, text %v", m, jsonKeys[m], textKeys[m])
		}
	}
	// Lines that depend on timing (a debug line about a write, say) may be
	// in one run only; every event in both has the same keys.
	for m, jk := range jsonKeys {
		if tk, ok := textKeys[m]; ok && !slices.Equal(jk, tk) {
			t.Errorf("%q: json keys %v, text keys %v", m, jk, tk)
		}
	}
	want := map[string][]string{
		"binary left":     {"level", "msg", "proxy", "remote", "server_id", "time"},
		"grace started":   {"grace_period", "level", "msg", "proxy", "remote", "server_id", "time"},
		"grace reclaimed": {"away", "level", "msg", "proxy", "remote", "server_id", "time"},
		"grace expired":   {"grace_period", "level", "msg", "phones_dropped", "proxy", "remote", "server_id", "time"},
	}
	for m, keys := range want {
		if !slices.Equal(jsonKeys[m], keys) {
			t.Errorf("%q: keys %v, want %v", m, jsonKeys[m], keys)
		}
	}
}
