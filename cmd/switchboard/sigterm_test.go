package main

// Graceful shutdown of the real process (docs/protocol.md, "Shutdown"): SIGTERM
// closes every binary and phone with 1001 `shutting down`, refuses new
// upgrades, waits for the close handshakes, and exits 0.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"switchboard/internal/relaytest"
	"switchboard/internal/wsclient"
)

const sigtermWait = 20 * time.Second // bounds each wait in this test

// sources spreads the clients over several source addresses, so thousands
// of connections (and TIME_WAIT from earlier runs) do not exhaust one
// address's ephemeral ports.
var sources wsclient.Spread

// wsUpgrade returns the status of an upgrade request for path, and the
// client when it is a valid 101. The clients are raw (wsclient): no
// goroutine each, thousands of them.
func wsUpgrade(addr, path, serverID string) (*wsclient.Client, int, error) {
	lines := []string{"X-Pyrycode-Server: " + serverID, "X-Pyrycode-Version: 2", "User-Agent: sigterm-binary/1"}
	if path == "/v1/client" {
		lines = []string{"X-Pyrycode-Server: " + serverID, "X-Pyrycode-Token: tok", "User-Agent: sigterm-phone/1"}
	}
	c, err := wsclient.Dial(addr, wsclient.Options{Timeout: sigtermWait, Local: sources.Next(), ReadBufferSize: 256},
		wsclient.Request{Path: path, Host: "relay.test", Lines: lines})
	var se *wsclient.StatusError
	switch {
	case errors.As(err, &se):
		return nil, se.Code, nil
	case err != nil:
		return nil, 0, err
	}
	return c, http.StatusSwitchingProtocols, nil
}

// readClose reads up to the close frame (skipping pings, which the relay
// may send) and returns its code and reason.
func readClose(c *wsclient.Client) (int, string, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(sigtermWait))
	return c.ReadClose()
}

// forEach runs f over conns on a few goroutines and returns the first error.
func forEach[T any](items []T, f func(int, T) error) error {
	const workers = 8
	var wg sync.WaitGroup
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < len(items); i = int(next.Add(1)) - 1 {
				if err := f(i, items[i]); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func TestSIGTERMDrainsEveryConnectionAndExits0(t *testing.T) {
	const (
		binaries    = 180
		phonesEach  = 16 // the per-server-id cap
		drain       = 5 * time.Second
		connections = binaries * (1 + phonesEach)
	)
	p := relaytest.Switchboard(t, "--listen", "127.0.0.1:0", "--admin-listen", "", "--drain-timeout", drain.String(),
		"--rate-limit-burst", "0") // every client is on loopback: no per-IP limit
	addr := p.Addr

	// 180 binaries with 16 phones each, opened by a few workers.
	groups := make([]int, binaries)
	clients := make([][]*wsclient.Client, binaries)
	err := forEach(groups, func(g, _ int) error {
		id := fmt.Sprintf("sigterm-%d", g)
		b, status, err := wsUpgrade(addr, "/v1/server", id)
		if err != nil || b == nil {
			return fmt.Errorf("binary %s: status %d, %v", id, status, err)
		}
		cs := []*wsclient.Client{b}
		for i := range phonesEach {
			p, status, err := wsUpgrade(addr, "/v1/client", id)
			if err != nil || p == nil {
				return fmt.Errorf("phone %d of %s: status %d, %v", i, id, status, err)
			}
			cs = append(cs, p)
		}
		clients[g] = cs
		return nil
	})
	var all []*wsclient.Client
	for _, cs := range clients {
		all = append(all, cs...)
	}
	t.Cleanup(func() {
		for _, c := range all {
			c.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != connections {
		t.Fatalf("%d connections open, want %d", len(all), connections)
	}

	// Every phone is registered (its 101 came after the registry's
	// decision; /healthz confirms no 4404 slipped in).
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var health struct {
		Binaries int `json:"connected_binaries"`
		Phones   int `json:"connected_phones"`
	}
	err = json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if err != nil || health.Binaries != binaries || health.Phones != binaries*phonesEach {
		t.Fatalf("healthz: %+v %v, want %d binaries and %d phones", health, err, binaries, binaries*phonesEach)
	}

	sigAt := time.Now()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// The first client's close frame proves the drain has begun; nobody has
	// answered yet, so the relay is still draining: a new upgrade is refused.
	if code, reason, err := readClose(all[0]); err != nil || code != 1001 || reason != "shutting down" {
		t.Fatalf("first client: close %d %q, %v; want 1001 %q", code, reason, err, "shutting down")
	}
	firstCloseAfter := time.Since(sigAt)
	late, status, err := wsUpgrade(addr, "/v1/client", "sigterm-0")
	switch {
	case late != nil:
		late.Close()
		t.Fatal("an upgrade after SIGTERM was accepted")
	case err != nil && errors.Is(err, syscall.ECONNREFUSED):
		t.Logf("upgrade after SIGTERM: connection refused")
	case err != nil:
		t.Fatalf("upgrade after SIGTERM: %v, want 503 or a refused connection", err)
	case status != http.StatusServiceUnavailable:
		t.Fatalf("upgrade after SIGTERM answered %d, want 503", status)
	default:
		t.Logf("upgrade after SIGTERM: 503")
	}
	_ = all[0].Close() // answer: close the socket

	// Every other client gets 1001 `shutting down` and answers by closing.
	var got atomic.Int64
	got.Add(1)
	err = forEach(all[1:], func(i int, c *wsclient.Client) error {
		code, reason, err := readClose(c)
		if err != nil || code != 1001 || reason != "shutting down" {
			return fmt.Errorf("client %d: close %d %q, %v; want 1001 %q", i+1, code, reason, err, "shutting down")
		}
		got.Add(1)
		return c.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	allClosedAfter := time.Since(sigAt)

	select {
	case <-p.Exited():
		took := time.Since(sigAt)
		if err := p.Err(); err != nil {
			t.Fatalf("relay exited with %v after SIGTERM, want status 0\n%s", err, p.Logs.Tail())
		}
		if took > drain {
			t.Fatalf("relay exited %v after SIGTERM, want within the drain timeout %v", took, drain)
		}
		t.Logf("%d connections (%d binaries, %d phones) got 1001 (first %v, all %v after SIGTERM); relay exited 0 after %v (drain timeout %v)",
			got.Load(), binaries, binaries*phonesEach, firstCloseAfter, allClosedAfter, took, drain)
	case <-time.After(drain + sigtermWait):
		t.Fatalf("relay still running %v after SIGTERM\n%s", time.Since(sigAt), p.Logs.Tail())
	}

	out := p.Logs.String()
	wantDraining := fmt.Sprintf("msg=draining binaries=%d phones=%d", binaries, binaries*phonesEach)
	for _, want := range []string{"msg=stopping signal=terminated", wantDraining, "msg=stopped"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q:\n%s", want, p.Logs.Tail())
		}
	}
	if strings.Contains(out, "drain deadline passed") {
		t.Errorf("the drain ran into its deadline although every client answered:\n%s", p.Logs.Tail())
	}
}
