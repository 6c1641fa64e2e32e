package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"switchboard/internal/haproxycfg"
)

// smallRun is enough phones for every figure to move (four binaries) and
// few enough for the whole stack to come up and down in seconds.
const smallRun = "50"

// TestStackmemSmall runs the measurement end to end at a small N through
// the installed HAProxy and checks it reports positive per-connection
// figures for each part of the stack and the large-message check passed.
func TestStackmemSmall(t *testing.T) {
	if haproxycfg.Path() == "" {
		t.Skip("haproxy not installed (apt-get install haproxy): the stack measurement needs it")
	}
	var out, errb bytes.Buffer
	start := time.Now()
	code := run([]string{"-phones", smallRun, "-runs", "1", "-connect-rate", "500"}, &out, &errb)
	t.Logf("exit %d after %v\nstderr:\n%s\nstdout:\n%s", code, time.Since(start), errb.String(), out.String())
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var res struct {
		Conns  int `json:"conns"`
		Median struct {
			HAProxy   float64 `json:"haproxy_rss_per_conn"`
			RelayRSS  float64 `json:"relay_rss_per_conn"`
			RelayUser float64 `json:"relay_user_per_conn"`
			TCPSocket float64 `json:"kernel_per_tcp_socket"`
			Kernel    float64 `json:"kernel_per_phone"`
			Sockets   float64 `json:"sockets_per_conn"`
		} `json:"median"`
		Samples []struct {
			Large int64 `json:"large_round_trips"`
			Clean bool  `json:"kernel_clean"`
		} `json:"samples"`
	}
	line, ok := strings.CutPrefix(lastLine(out.String(), "STACKMEM_RESULT "), "STACKMEM_RESULT ")
	if !ok {
		t.Fatal("no STACKMEM_RESULT line")
	}
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		t.Fatal(err)
	}
	m := res.Median
	if res.Conns != 54 || m.HAProxy <= 0 || m.RelayRSS <= 0 || m.RelayUser <= 0 {
		t.Errorf("conns %d, per connection: HAProxy %.0f, relay RSS %.0f, relay user %.0f; want 54 and all positive",
			res.Conns, m.HAProxy, m.RelayRSS, m.RelayUser)
	}
	if len(res.Samples) != 1 || res.Samples[0].Large <= 0 {
		t.Fatalf("large-message check: %+v, want round trips", res.Samples)
	}
	// The kernel's figures are machine-wide: when another process opened
	// or closed sockets meanwhile (the run says so), they say nothing.
	if !res.Samples[0].Clean {
		t.Logf("kernel figures not checked: other sockets came and went during the run")
		return
	}
	// Loopback has four TCP sockets per connection.
	if m.Sockets < 3.5 || m.Sockets > 4.5 || m.TCPSocket <= 0 || m.Kernel != 3*m.TCPSocket {
		t.Errorf("%.2f sockets added per connection (want about 4), %.0f bytes per TCP socket, %.0f per phone (want positive, 3 sockets)",
			m.Sockets, m.TCPSocket, m.Kernel)
	}
}

func lastLine(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// TestParseRefuses: flags that cannot work are refused before anything
// starts.
func TestParseRefuses(t *testing.T) {
	for _, args := range [][]string{{"-phones", "0"}, {"-phones", "12000"}, {"-runs", "0"}, {"-nope"}} {
		var errb bytes.Buffer
		if code := run(args, &bytes.Buffer{}, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
}
