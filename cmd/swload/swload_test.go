package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"switchboard/internal/relaytest"
	"switchboard/loop"
)

// TestWorkerProcesses runs the built command; relaytest builds it and
// removes it after.
func TestMain(m *testing.M) { relaytest.Main(m) }

// startRelay runs a Switchboard on a loopback port for one test.
func startRelay(t *testing.T) string {
	return relaytest.Start(t, loop.Config{}).Addr
}

// summaryOf finds and decodes the SWLOAD_RESULT line.
func summaryOf(t *testing.T, stdout string) Summary {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var found []string
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), ResultPrefix); ok {
			found = append(found, rest)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %q line, got %d in:\n%s", ResultPrefix, len(found), stdout)
	}
	var s Summary
	if err := json.Unmarshal([]byte(found[0]), &s); err != nil {
		t.Fatalf("result line: %v\n%s", err, found[0])
	}
	return s
}

// runQuick calls Run in-process (the same path as the command with
// --procs 1) and checks what every run must satisfy.
func runQuick(t *testing.T, cfg Config) (*Result, Summary, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg.Progress = 250 * time.Millisecond
	res, err := Run(ctx, cfg, &stdout, &stderr)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("stderr:\n%s\nstdout:\n%s", stderr.String(), stdout.String())
	s := summaryOf(t, stdout.String())
	if s.ErrorsTotal != 0 || len(s.Errors) != 0 {
		t.Errorf("errors: %v", s.Errors)
	}
	if len(s.ConnectFailures) != 0 {
		t.Errorf("connect failures: %v", s.ConnectFailures)
	}
	if s.TimedOut || s.WorkerFailures != 0 {
		t.Errorf("timed out %v, worker failures %d", s.TimedOut, s.WorkerFailures)
	}
	if !strings.Contains(stderr.String(), "swload ") {
		t.Errorf("no progress line on stderr")
	}
	if strings.Contains(stdout.String(), "hint: ") {
		t.Errorf("a hint in a clean run")
	}
	if s.Mode != cfg.Mode || s.Procs != 1 {
		t.Errorf("mode %q procs %d", s.Mode, s.Procs)
	}
	return res, s, stderr.String()
}

func TestIdle(t *testing.T) {
	addr := startRelay(t)
	const phones = 40
	_, s, _ := runQuick(t, Config{Mode: modeIdle, Addr: addr, Phones: phones, PhonesPerBinary: 16,
		ConnectRate: 400, Hold: time.Second, SourceIPs: 4})
	if s.Phones != phones || s.Binaries != 3 {
		t.Errorf("phones %d binaries %d, want %d and 3", s.Phones, s.Binaries, phones)
	}
	if s.ConnectsOK != phones || s.ConnectsAttempted != phones || s.PeakLive != phones || s.LiveAtEndOfHold != phones {
		t.Errorf("connects %d/%d, peak %d, live at end %d, want %d", s.ConnectsOK, s.ConnectsAttempted, s.PeakLive, s.LiveAtEndOfHold, phones)
	}
	// One warm-up round trip per phone.
	if s.RoundTrips != phones || s.LatencyUS.Count != phones || s.LatencyUS.P50 <= 0 {
		t.Errorf("round trips %d, latency %+v", s.RoundTrips, s.LatencyUS)
	}
	// Paced: 40 connects at 400/s take ~0.1 s, so the rate cannot be far above.
	if s.ConnectRatePerS <= 0 || s.ConnectRatePerS > 800 {
		t.Errorf("connect rate %.1f/s, want about 400", s.ConnectRatePerS)
	}
	if s.DurationS < 0.9 || s.DurationS > 2 {
		t.Errorf("hold %.2f s, want ~1", s.DurationS)
	}
	if s.CloseNotices > phones {
		t.Errorf("close notices %d > phones", s.CloseNotices)
	}
	if s.CPUUserS+s.CPUSysS <= 0 {
		t.Errorf("no CPU time reported")
	}
}

func TestActive(t *testing.T) {
	addr := startRelay(t)
	const phones, inflight, size = 20, 4, 300
	res, s, _ := runQuick(t, Config{Mode: modeActive, Addr: addr, Phones: phones, PhonesPerBinary: 8,
		Inflight: inflight, Size: size, Duration: 1500 * time.Millisecond, ConnectRate: 0})
	if s.Binaries != 3 || s.Inflight != inflight || s.Size != size {
		t.Errorf("binaries %d inflight %d size %d", s.Binaries, s.Inflight, s.Size)
	}
	if s.ConnectsOK != phones {
		t.Errorf("connects ok %d, want %d", s.ConnectsOK, phones)
	}
	// Even under -race a loopback relay does thousands per second.
	if s.RoundTrips < 500 || s.ThroughputPerS < 300 {
		t.Errorf("round trips %d (%.0f/s), implausibly few", s.RoundTrips, s.ThroughputPerS)
	}
	// Every round trip was timed, and every reply verified (errors == 0).
	if s.LatencyUS.Count != uint64(s.RoundTrips) {
		t.Errorf("latency samples %d, round trips %d", s.LatencyUS.Count, s.RoundTrips)
	}
	if !(s.LatencyUS.P50 > 0 && s.LatencyUS.P50 <= s.LatencyUS.P99 && s.LatencyUS.P99 <= s.LatencyUS.P999 && s.LatencyUS.P999 <= s.LatencyUS.Max) {
		t.Errorf("latency percentiles out of order: %+v", s.LatencyUS)
	}
	// Every binary echoed every phone frame: warm-ups plus round trips.
	if res.Echoed != int64(phones)+s.RoundTrips {
		t.Errorf("echoed %d, want %d", res.Echoed, int64(phones)+s.RoundTrips)
	}
	if res.WindowRoundTrips > s.RoundTrips || res.WindowRoundTrips < s.RoundTrips-int64(phones*inflight) {
		t.Errorf("window round trips %d of %d: more than the in-flight messages finished after the window", res.WindowRoundTrips, s.RoundTrips)
	}
	if s.DurationS < 1.4 || s.DurationS > 3 {
		t.Errorf("window %.2f s, want ~1.5", s.DurationS)
	}
}

func TestChurn(t *testing.T) {
	addr := startRelay(t)
	_, s, stderr := runQuick(t, Config{Mode: modeChurn, Addr: addr, Phones: 8, PhonesPerBinary: 4,
		ConnectRate: 200, Duration: 1500 * time.Millisecond})
	if s.Binaries != 2 {
		t.Errorf("binaries %d, want 2", s.Binaries)
	}
	// 200/s for 1.5 s is 300; allow for -race and a slow box.
	if s.Cycles < 100 || s.Cycles > 320 {
		t.Errorf("cycles %d, want ~300", s.Cycles)
	}
	if s.ConnectsOK != s.Cycles || s.RoundTrips != s.Cycles || s.ConnectsAttempted != s.Cycles {
		t.Errorf("connects %d/%d, round trips %d, cycles %d", s.ConnectsOK, s.ConnectsAttempted, s.RoundTrips, s.Cycles)
	}
	if s.PeakLive > 8 {
		t.Errorf("peak live %d over the 8 slots", s.PeakLive)
	}
	if !strings.Contains(stderr, "cycles/s") {
		t.Errorf("progress shows no churn rate")
	}
}

// TestInterrupt: cancelling the context (what SIGINT does) ends a long hold
// early and still reports, with no errors.
func TestInterrupt(t *testing.T) {
	addr := startRelay(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(time.Second, cancel)
	var stdout, stderr bytes.Buffer
	start := time.Now()
	res, err := Run(ctx, Config{Mode: modeIdle, Addr: addr, Phones: 20, Hold: time.Minute}, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("run took %s after interrupt", el)
	}
	s := summaryOf(t, stdout.String())
	if !res.Interrupted || !s.Interrupted || s.ErrorsTotal != 0 || s.ConnectsOK != 20 {
		t.Errorf("interrupted %v, errors %v, connects %d\n%s", s.Interrupted, s.Errors, s.ConnectsOK, stdout.String())
	}
}

// TestConnectFailureKinds: phones naming a server-id with no binary are counted
// as connect failures by close code, not as errors or successes.
func TestConnectFailureKinds(t *testing.T) {
	addr := startRelay(t)
	e := newEngine(Config{Addr: addr, Size: 256, DialTimeout: 5 * time.Second, ReplyTimeout: 5 * time.Second, Drain: time.Second}, share{procs: 1})
	if p := e.connectPhone("nobody-holds-this", 1); p != nil {
		t.Fatal("phone connected without a binary")
	}
	if got := e.connFails.snapshot(); got["close_4404"] != 1 {
		t.Errorf("connect failures %v, want close_4404=1", got)
	}
	// 4404 is retried (a relay may register a binary just after its 101).
	if n := e.retries.Load(); n != connectRetries {
		t.Errorf("retries %d, want %d", n, connectRetries)
	}
	// Nothing listens on a fresh port's address once it is closed.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	e.cfg.Addr = dead
	if p := e.connectPhone("x", 2); p != nil {
		t.Fatal("connected to a closed port")
	}
	if got := e.connFails.snapshot(); got["dial_refused"] != 1 {
		t.Errorf("connect failures %v, want dial_refused=1", got)
	}
}

// TestWorkerProcesses builds the command and runs it with --procs 2: the
// parent re-executes itself as two workers and merges their results.
func TestWorkerProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	addr := startRelay(t)
	bin := relaytest.Build(t, "switchboard/cmd/swload")
	for _, tc := range []struct {
		mode string
		args []string
	}{
		{modeIdle, []string{"--phones", "50", "--hold", "1s", "--connect-rate", "500"}},
		{modeActive, []string{"--phones", "20", "--inflight", "2", "--duration", "1s", "--phones-per-binary", "4"}},
		// Open loop: each worker paces its own phones on the shared schedule.
		{modeActive, []string{"--phones", "20", "--rate", "1000", "--duration", "1s", "--phones-per-binary", "4"}},
		// --progress 0 (after the 300ms below): neither workers nor parent print progress.
		{modeIdle, []string{"--phones", "50", "--hold", "1s", "--connect-rate", "500", "--progress", "0"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			args := append([]string{"--addr", addr, "--mode", tc.mode, "--procs", "2", "--progress", "300ms"}, tc.args...)
			cmd := exec.CommandContext(ctx, bin, args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			t.Logf("stderr:\n%s\nstdout:\n%s", stderr.String(), stdout.String())
			if err != nil {
				t.Fatalf("swload: %v", err)
			}
			s := summaryOf(t, stdout.String())
			if s.Procs != 2 || s.WorkerFailures != 0 || s.ErrorsTotal != 0 || len(s.ConnectFailures) != 0 {
				t.Errorf("procs %d, worker failures %d, errors %v, connect failures %v", s.Procs, s.WorkerFailures, s.Errors, s.ConnectFailures)
			}
			switch tc.mode {
			case modeIdle:
				if s.Phones != 50 || s.ConnectsOK != 50 || s.LiveAtEndOfHold != 50 || s.Binaries != 4 {
					t.Errorf("phones %d, connects %d, live %d, binaries %d", s.Phones, s.ConnectsOK, s.LiveAtEndOfHold, s.Binaries)
				}
				if s.LatencyUS.Count != 50 {
					t.Errorf("merged latency count %d, want 50", s.LatencyUS.Count)
				}
			case modeActive:
				if s.Phones != 20 || s.ConnectsOK != 20 || s.Binaries != 6 || s.RoundTrips < 200 {
					t.Errorf("phones %d, connects %d, binaries %d, round trips %d", s.Phones, s.ConnectsOK, s.Binaries, s.RoundTrips)
				}
				if s.LatencyUS.Count != uint64(s.RoundTrips) {
					t.Errorf("merged latency count %d, round trips %d", s.LatencyUS.Count, s.RoundTrips)
				}
				if s.RateTarget > 0 && (s.RateTarget != 1000 || s.RateAchieved < 850 || s.RateAchieved > 1100 || s.Sends != s.RoundTrips) {
					t.Errorf("open loop over workers: target %g achieved %.1f, sends %d, round trips %d", s.RateTarget, s.RateAchieved, s.Sends, s.RoundTrips)
				}
			}
			quiet := slices.Contains(tc.args, "--progress")
			if got := strings.Contains(stderr.String(), "live "); got == quiet {
				t.Errorf("merged progress lines %v, want %v", got, !quiet)
			}
		})
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--mode", "bogus"},
		{"--size", "10"},
		{"--phones", "0"},
		{"--inflight", "0"},
		{"--procs", "5", "--phones", "2"},
		{"extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, strings.NewReader(""), &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
}

// TestActiveRate: the open loop holds its schedule against a relay that
// keeps up: the achieved send rate is the target, every message comes back,
// and latency is timed from the scheduled send time.
func TestActiveRate(t *testing.T) {
	addr := startRelay(t)
	const phones, rate, window = 32, 2000.0, 1500 * time.Millisecond
	res, s, stderr := runQuick(t, Config{Mode: modeActive, Addr: addr, Phones: phones, PhonesPerBinary: 8,
		Inflight: 16, Size: 256, Rate: rate, Duration: window, ConnectRate: 0})
	if s.RateTarget != rate || s.Inflight != 16 {
		t.Errorf("rate target %g inflight %d", s.RateTarget, s.Inflight)
	}
	// The schedule puts rate × window sends in the window; allow for a
	// loaded machine and the race detector.
	if s.RateAchieved < 0.9*rate || s.RateAchieved > 1.05*rate {
		t.Errorf("achieved %.1f/s, want about %g/s", s.RateAchieved, rate)
	}
	want := rate * s.DurationS
	if float64(s.Sends) < 0.9*want || float64(s.Sends) > want+phones {
		t.Errorf("sends %d in %.2f s, want about %.0f", s.Sends, s.DurationS, want)
	}
	// Nothing was lost (runQuick checked errors): every send came back,
	// and every reply was timed; the reply rate follows the send rate.
	if s.RoundTrips != s.Sends || s.LatencyUS.Count != uint64(s.Sends) || res.Echoed != int64(phones)+s.Sends {
		t.Errorf("sends %d, round trips %d, latency samples %d, echoed %d", s.Sends, s.RoundTrips, s.LatencyUS.Count, res.Echoed)
	}
	if s.ThroughputPerS < 0.85*rate || s.ThroughputPerS > 1.05*rate {
		t.Errorf("reply rate %.1f/s, want about %g/s", s.ThroughputPerS, rate)
	}
	if s.SendLagUS.Count != uint64(s.Sends) || !(s.LatencyUS.P50 > 0 && s.LatencyUS.P50 <= s.LatencyUS.P99) {
		t.Errorf("send lag %+v, latency %+v", s.SendLagUS, s.LatencyUS)
	}
	if !strings.Contains(stderr, "sent/s") {
		t.Errorf("progress shows no send rate")
	}
	if s.DurationS < 1.4 || s.DurationS > 3 {
		t.Errorf("window %.2f s, want ~1.5", s.DurationS)
	}
}
