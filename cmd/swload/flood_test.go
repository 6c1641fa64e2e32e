package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"switchboard/internal/relaytest"
	"switchboard/loop"
)

// startRelayMetrics runs a Switchboard on a loopback port, with its
// /metrics on a second one, for one test.
func startRelayMetrics(t *testing.T) (addr, metricsURL string) {
	r := relaytest.Start(t, loop.Config{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = r.WriteMetrics(w)
	}))
	t.Cleanup(hs.Close)
	return r.Addr, hs.URL + "/metrics"
}

// TestFlood runs each scenario for about a second with small messages
// against an in-process relay (this process's RSS stands in for the
// relay's) and checks the result's shape: the flood flowed, the calm pair
// got its replies, RSS and metrics were sampled, and swload saw nothing
// wrong with what it received.
func TestFlood(t *testing.T) {
	for _, tc := range []struct {
		scenario string
		flooders int
	}{
		{scenBinariesToPhones, 2},
		{scenPhonesToBinary, 4},
		{scenDeafBinary, 4},
	} {
		t.Run(tc.scenario, func(t *testing.T) {
			addr, murl := startRelayMetrics(t)
			_, s, _ := runQuick(t, Config{Mode: modeFlood, Scenario: tc.scenario, Addr: addr, Flooders: tc.flooders,
				Size: 16 << 10, Duration: time.Second, Drain: 10 * time.Second, ConnectRate: 0, // the drain ends once all has arrived; under -race the binary catches up slowly
				RelayPID: os.Getpid(), MetricsURL: murl})
			f := s.Flood
			if f == nil {
				t.Fatalf("no flood object in the result")
			}
			t.Logf("flooder disconnects %v, receiver disconnects %v, redials %d, undelivered %d", f.FlooderDisconnects, f.ReceiverDisconnects, f.Redials, f.Undelivered)
			if f.Scenario != tc.scenario || f.Flooders != tc.flooders || f.Size != 16<<10 || s.ConnectsOK != int64(tc.flooders) {
				t.Errorf("scenario %q flooders %d size %d connects %d", f.Scenario, f.Flooders, f.Size, s.ConnectsOK)
			}
			if s.DurationS < 0.9 || s.DurationS > 3 {
				t.Errorf("window %.2f s, want ~1", s.DurationS)
			}
			if f.Sent == 0 || f.SentBytes < f.Sent*(16<<10) || f.OfferedMBps <= 0 {
				t.Errorf("sent %d messages, %d bytes, %.1f MB/s", f.Sent, f.SentBytes, f.OfferedMBps)
			}
			// The calm pair: ~100 sends at 10 ms, every one answered.
			c := f.Calm
			if c.Sent < 20 || c.Replies != c.Sent || c.Lost != 0 || s.LatencyUS.Count != uint64(c.Replies) {
				t.Errorf("calm sent %d, replies %d, lost %d, latency samples %d", c.Sent, c.Replies, c.Lost, s.LatencyUS.Count)
			}
			if !(c.P50US > 0 && c.P50US <= c.P99US && c.P99US <= c.MaxUS) {
				t.Errorf("calm percentiles out of order: %+v", c)
			}
			if f.RSS.PID != os.Getpid() || f.RSS.Samples < 5 || f.RSS.PeakBytes <= 0 || f.RSS.ReadErrors != 0 {
				t.Errorf("rss %+v", f.RSS)
			}
			m := f.Metrics
			if m == nil || m.Samples < 2 || m.FetchErrors != 0 || m.BufferedBytesPeak < 0 || m.ReadPausesTotal < 0 {
				t.Fatalf("metrics %+v", m)
			}
			switch tc.scenario {
			case scenDeafBinary:
				// Nothing arrives; the relay may close the phones of a binary
				// that never reads (1011 binary backlog full), and they redial.
				if f.Received != 0 || f.Undelivered != 0 {
					t.Errorf("deaf binary received %d, undelivered %d", f.Received, f.Undelivered)
				}
				if len(f.ReceiverDisconnects) != 0 {
					t.Errorf("receiver disconnects %v", f.ReceiverDisconnects)
				}
			default:
				if f.Received == 0 || f.ReceivedBytes == 0 {
					t.Errorf("received %d messages, %d bytes", f.Received, f.ReceivedBytes)
				}
				// Without disconnects, everything sent arrived.
				if len(f.FlooderDisconnects)+len(f.ReceiverDisconnects) == 0 && (f.Undelivered != 0 || f.Received != f.Sent) {
					t.Errorf("sent %d, received %d, undelivered %d with no disconnects", f.Sent, f.Received, f.Undelivered)
				}
			}
			// A disconnect is the relay's close frame, never a bare socket error.
			for _, d := range []map[string]int64{f.FlooderDisconnects, f.ReceiverDisconnects} {
				for k := range d {
					if !strings.Contains(k, "close_") {
						t.Errorf("disconnect kind %q is not a close code", k)
					}
				}
			}
		})
	}
}

// TestFloodFlags: the flood flags parse, default and refuse what they
// should.
func TestFloodFlags(t *testing.T) {
	var errb bytes.Buffer
	c, err := parseFlags([]string{"--mode", "flood", "--scenario", scenDeafBinary, "--addr", "127.0.0.1:1", "--max-rss", "512MiB"}, &errb)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if c.Size != defaultFloodSize || c.Flooders != 1 || c.CalmInterval != 10*time.Millisecond || c.CalmSize != 64 || c.MaxRSS != 512<<20 || c.Procs != 1 {
		t.Errorf("defaults: size %d flooders %d calm %s/%d max-rss %d procs %d", c.Size, c.Flooders, c.CalmInterval, c.CalmSize, c.MaxRSS, c.Procs)
	}
	for _, args := range [][]string{
		{"--mode", "flood", "--scenario", "bogus"},
		{"--mode", "flood"},
		{"--mode", "flood", "--scenario", scenDeafBinary, "--addr", "10.1.2.3:80"},
		{"--mode", "flood", "--scenario", scenDeafBinary, "--flooders", "0"},
		{"--mode", "flood", "--scenario", scenDeafBinary, "--size", "100"},
		{"--mode", "flood", "--scenario", scenDeafBinary, "--procs", "2"},
		{"--mode", "flood", "--scenario", scenDeafBinary, "--max-rss", "lots"},
		{"--mode", "flood", "--scenario", scenDeafBinary, "--metrics-url", "http://example.com/metrics"},
		{"--mode", "flood", "--scenario", scenBinariesToPhones, "--flooders", "10000"},
		{"--mode", "flood", "--scenario", scenDeafBinary, "--relay-pid", "999999999"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, strings.NewReader(""), &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
	for in, want := range map[string]int64{"4GiB": 4 << 30, "100": 100, "64KiB": 64 << 10, "3M": 3 << 20} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	page := "# HELP x y\n# TYPE x gauge\nswitchboard_buffered_bytes 1234\n" +
		"switchboard_closes_total{reason=\"binary_backlog_full\"} 3\nswitchboard_closes_total{reason=\"normal\"} 0\n" +
		"switchboard_read_pauses_total{reason=\"input_full\"} 5\nswitchboard_read_pauses_total{reason=\"yield\"} 2\n"
	vals, err := parseMetrics(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	m := &metricsSampler{bufPeak: -1, pausedPeak: -1, last: vals}
	s := m.summary()
	if s.ReadPausesTotal != 7 || s.ReadPauses["input_full"] != 5 || s.Closes["binary_backlog_full"] != 3 || len(s.Closes) != 1 {
		t.Errorf("summary %+v", s)
	}
	if vals["switchboard_buffered_bytes"] != 1234 {
		t.Errorf("buffered %v", vals["switchboard_buffered_bytes"])
	}
}
