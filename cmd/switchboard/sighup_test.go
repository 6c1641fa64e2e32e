package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"switchboard/internal/relaytest"
)

// SIGHUP's default action would kill the relay without a close frame, and
// systemd would not restart it. The relay logs it and keeps every
// connection.
func TestSIGHUPIsLoggedAndIgnored(t *testing.T) {
	p := relaytest.Switchboard(t, "--listen", "127.0.0.1:0", "--admin-listen", "", "--rate-limit-burst", "0")
	bin, status, err := wsUpgrade(p.Addr, "/v1/server", "sighup-1")
	if err != nil || bin == nil {
		t.Fatalf("binary: status %d, %v", status, err)
	}
	defer bin.Close()
	phone, status, err := wsUpgrade(p.Addr, "/v1/client", "sighup-1")
	if err != nil || phone == nil {
		t.Fatalf("phone: status %d, %v", status, err)
	}
	defer phone.Close()

	for i := range 2 { // twice: the second proves the first did not restore the default action
		if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		n := i + 1
		if _, ok := p.Logs.WaitNth(p.Exited(), sigtermWait, n, func(l string) bool {
			return strings.Contains(l, `msg="signal ignored" signal=SIGHUP`)
		}); !ok {
			t.Fatalf("no log line for SIGHUP %d:\n%s", n, p.Logs.Tail())
		}
	}

	// Still serving, both connections still registered.
	resp, err := http.Get("http://" + p.Addr + "/healthz")
	if err != nil {
		t.Fatalf("healthz after SIGHUP: %v\n%s", err, p.Logs.Tail())
	}
	var health struct {
		Status   string `json:"status"`
		Binaries int    `json:"connected_binaries"`
		Phones   int    `json:"connected_phones"`
	}
	err = json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if err != nil || health.Status != "ok" || health.Binaries != 1 || health.Phones != 1 {
		t.Fatalf("healthz after SIGHUP: %+v %v, want ok with 1 binary and 1 phone", health, err)
	}

	// SIGTERM still drains: the binary gets 1001.
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, reason, err := readClose(bin); err != nil || code != 1001 {
		t.Fatalf("binary after SIGTERM: close %d %q, %v; want 1001", code, reason, err)
	}
	bin.Close()
	phone.Close()
	select {
	case <-p.Exited():
		if err := p.Err(); err != nil {
			t.Fatalf("exit after SIGTERM: %v, want 0\n%s", err, p.Logs.Tail())
		}
	case <-time.After(sigtermWait):
		t.Fatalf("relay still running after SIGTERM\n%s", p.Logs.Tail())
	}
}
