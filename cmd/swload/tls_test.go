package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"switchboard/internal/relaytest"
	"switchboard/loop"
)

// TestWSSThroughHAProxy: swload dials wss:// through HAProxy (the shipped
// deploy/haproxy.cfg) in front of a real relay. Trusting the test's own
// certificate with --ca-file, every reply comes back verified; --insecure
// works too and says so; trusting neither, every connect fails TLS
// verification and the run fails.
func TestWSSThroughHAProxy(t *testing.T) {
	relay := relaytest.Start(t, loop.Config{ProxyProtocol: true})
	fe := startTLSFrontend(t, relay.Addr)
	url := "wss://" + fe.addr

	t.Run("ca-file", func(t *testing.T) {
		_, s, _ := runQuick(t, Config{Mode: modeActive, Addr: url, CAFile: fe.caFile, Phones: 8, PhonesPerBinary: 4,
			Inflight: 2, Duration: time.Second, ConnectRate: 0})
		if s.Addr != url || s.ConnectsOK != 8 || s.Binaries != 2 || s.RoundTrips < 50 {
			t.Errorf("addr %q, connects %d, binaries %d, round trips %d through TLS", s.Addr, s.ConnectsOK, s.Binaries, s.RoundTrips)
		}
	})
	// The command's own path: flags, the warning, the exit status.
	cmd := func(t *testing.T, args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"--addr", url, "--mode", "idle", "--phones", "4", "--phones-per-binary", "2",
			"--hold", "200ms", "--drain", "2s", "--progress", "0"}, args...), strings.NewReader(""), &stdout, &stderr)
		t.Logf("exit %d\nstderr:\n%s\nstdout:\n%s", code, stderr.String(), stdout.String())
		return code, stdout.String(), stderr.String()
	}
	t.Run("insecure", func(t *testing.T) {
		code, stdout, stderr := cmd(t, "--insecure")
		s := summaryOf(t, stdout)
		if code != 0 || s.ConnectsOK != 4 {
			t.Errorf("exit %d, connects %d, want 0 and 4", code, s.ConnectsOK)
		}
		if !strings.Contains(stderr, "WARNING: --insecure") {
			t.Errorf("no warning about --insecure on stderr")
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		code, stdout, _ := cmd(t)
		s := summaryOf(t, stdout)
		if code != 1 || s.ConnectsOK != 0 || s.ConnectFailures["binary_dial_tls_verify"] != 2 || s.ConnectFailures["dial_tls_verify"] != 4 {
			t.Errorf("exit %d, connects %d, connect failures %v; want 1, 0, binary_dial_tls_verify=2 dial_tls_verify=4", code, s.ConnectsOK, s.ConnectFailures)
		}
	})
}

// TestAddrForms: host:port and ws:// reach the relay in the clear, the
// report names the URL for wss://, and what cannot work is refused up
// front.
func TestAddrForms(t *testing.T) {
	addr := startRelay(t)
	_, s, _ := runQuick(t, Config{Mode: modeIdle, Addr: "ws://" + addr + "/", Phones: 2, Hold: 600 * time.Millisecond})
	if s.Addr != addr || s.ConnectsOK != 2 {
		t.Errorf("ws:// URL: addr %q connects %d, want %q and 2", s.Addr, s.ConnectsOK, addr)
	}
	c := Config{Addr: "wss://relay.example"}
	if err := c.resolveTarget(); err != nil || c.Addr != "relay.example:443" || !c.TLS || c.tlsConf.ServerName != "relay.example" || c.target() != "wss://relay.example:443" {
		t.Errorf("wss://relay.example: %v, addr %q, tls %v, target %q", err, c.Addr, c.TLS, c.target())
	}
	for _, args := range [][]string{
		{"--addr", "http://127.0.0.1:8080"},
		{"--addr", "wss://127.0.0.1:8443/v1/client"},
		{"--addr", "127.0.0.1:8080", "--insecure"},
		{"--addr", "127.0.0.1:8080", "--ca-file", "x.pem"},
		{"--addr", "wss://127.0.0.1:8443", "--ca-file", "/nonexistent.pem"},
		{"--addr", "wss://127.0.0.1:8443", "--ca-file", "haproxy_test.go"}, // no PEM in it
		{"--addr", "wss://127.0.0.1:8443", "--ca-file", "x.pem", "--insecure"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, strings.NewReader(""), &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
}

// TestWorkerArgsCarryTLSAndQuiet: a worker parses back the parent's TLS
// settings and silence.
func TestWorkerArgsCarryTLSAndQuiet(t *testing.T) {
	var errb bytes.Buffer
	c, err := parseFlags([]string{"--addr", "wss://127.0.0.1:8443", "--insecure", "--progress", "0", "--phones", "4", "--procs", "2"}, &errb)
	if err != nil {
		t.Fatal(err)
	}
	w, err := parseFlags(workerArgs(&c, 1), &errb)
	if err != nil {
		t.Fatalf("worker flags %v: %v", workerArgs(&c, 1), err)
	}
	if !w.TLS || !w.Insecure || w.Addr != "127.0.0.1:8443" || w.Progress > 0 || w.tlsConf == nil || !w.tlsConf.InsecureSkipVerify {
		t.Errorf("worker config: tls %v insecure %v addr %q progress %v", w.TLS, w.Insecure, w.Addr, w.Progress)
	}
}
