package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"switchboard/internal/relaytest"
	"switchboard/loop"
)

// In TestRelayDrainUnderSwload, drainLinger is the relay's --close-linger:
// what each binary would hold the drain for if it did not answer the
// relay's close frame. The drain must finish within drainBound, and
// swload's hold (drainHold) outlasts that, so swload's own closes at the
// end of its hold cannot be what ends the drain.
const (
	drainLinger = 20 * time.Second
	drainBound  = 4 * time.Second
	drainHold   = 6 * time.Second
)

// TestRelayDrainUnderSwload: a relay process told to stop (SIGTERM) while
// swload holds phones and binaries on it finishes its drain at once, every
// close answered, instead of waiting out --close-linger for the binaries;
// swload reports every connection as drained, no error, and exits 0.
func TestRelayDrainUnderSwload(t *testing.T) {
	const phones, perBinary = 12, 4
	relay := relaytest.Switchboard(t, "--listen", relaytest.FreeAddr(t), "--admin-listen", "", "--rate-limit-burst", "0",
		"--close-linger", drainLinger.String(), "--drain-timeout", (2 * drainLinger).String())

	progress := &relaytest.LogSink{}
	var stdout relaytest.LogSink
	type outcome struct {
		res *Result
		err error
	}
	done := make(chan outcome, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		// The hold ends on its own, so the exit status is the one a real
		// run would get.
		res, err := Run(ctx, Config{Mode: modeIdle, Addr: relay.Addr, Phones: phones, PhonesPerBinary: perBinary,
			ConnectRate: 0, Hold: drainHold, Drain: 2 * time.Second, Progress: 100 * time.Millisecond}, &stdout, progress)
		done <- outcome{res, err}
	}()
	if _, ok := progress.WaitLine(nil, 30*time.Second, func(l string) bool { return strings.Contains(l, " hold ") }); !ok {
		t.Fatalf("swload never held its phones:\n%s\n%s", progress.Tail(), relay.Logs.Tail())
	}

	signalled := time.Now()
	if err := relay.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, ok := relay.Logs.WaitLine(relay.Exited(), drainBound, func(l string) bool { return strings.Contains(l, "stopped") }); !ok {
		t.Fatalf("relay not stopped %v after SIGTERM (close linger %v):\n%s", drainBound, drainLinger, relay.Logs.Tail())
	}
	took := time.Since(signalled)
	if l, ok := relay.Logs.Line(func(l string) bool { return strings.Contains(l, "drain deadline passed") }); ok {
		t.Errorf("the relay's drain ran out: %s", l)
	}
	if err := relay.Err(); err != nil {
		t.Errorf("relay exit: %v", err)
	}
	t.Logf("relay drained and stopped %v after SIGTERM", took.Round(time.Millisecond))

	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	t.Logf("stdout:\n%s", stdout.String())
	s := summaryOf(t, stdout.String())
	binaries := phones / perBinary
	if s.Drained != int64(phones+binaries) || s.DrainedBinaries != int64(binaries) || s.DrainedUnanswered != 0 {
		t.Errorf("drained %d (binaries %d, unanswered %d), want %d (%d, 0)", s.Drained, s.DrainedBinaries, s.DrainedUnanswered, phones+binaries, binaries)
	}
	if s.ErrorsTotal != 0 || len(s.ConnectFailures) != 0 {
		t.Errorf("a drain counted as errors %v / connect failures %v", s.Errors, s.ConnectFailures)
	}
	if !strings.Contains(stdout.String(), "a drain, not an error") {
		t.Errorf("no drained line in the report")
	}
	if code := exitCode(o.res); code != 0 {
		t.Errorf("exit status %d after a drain and nothing else, want 0", code)
	}
}

// TestActiveDrain: an in-process relay shut down while active phones have
// messages in flight, closed and open loop. Shutdown returns well inside
// the relay's close linger (every close answered); every phone and binary
// is counted drained, what was in flight as unanswered, and nothing as an
// error or as lost.
func TestActiveDrain(t *testing.T) {
	for _, tc := range []struct {
		name string
		rate float64
	}{{"closed loop", 0}, {"open loop", 400}} {
		t.Run(tc.name, func(t *testing.T) {
			const phones, perBinary = 8, 4
			relay := relaytest.Start(t, loop.Config{})
			progress := &relaytest.LogSink{}
			var stdout relaytest.LogSink
			done := make(chan *Result, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			go func() {
				res, err := Run(ctx, Config{Mode: modeActive, Addr: relay.Addr, Phones: phones, PhonesPerBinary: perBinary,
					Inflight: 4, Rate: tc.rate, Duration: 30 * time.Second, ConnectRate: 0, Progress: 50 * time.Millisecond}, &stdout, progress)
				if err != nil {
					t.Error(err)
				}
				done <- res
			}()
			if _, ok := progress.WaitLine(nil, 30*time.Second, func(l string) bool { return strings.Contains(l, " run ") }); !ok {
				t.Fatalf("swload never ran:\n%s", progress.Tail())
			}
			// Shutdown's own bound is far past the linger it must not wait.
			linger := relay.Config().CloseLinger
			sctx, scancel := context.WithTimeout(context.Background(), 3*linger)
			defer scancel()
			began := time.Now()
			if err := relay.Shutdown(sctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if took := time.Since(began); took > linger/2 {
				t.Errorf("Shutdown took %v, the close linger is %v: closes went unanswered", took, linger)
			}
			cancel() // the window has nothing left to measure
			res := <-done
			t.Logf("stdout:\n%s", stdout.String())
			s := summaryOf(t, stdout.String())
			if s.Drained != phones+phones/perBinary || s.DrainedBinaries != phones/perBinary {
				t.Errorf("drained %d (binaries %d), want %d (%d)", s.Drained, s.DrainedBinaries, phones+phones/perBinary, phones/perBinary)
			}
			if s.ErrorsTotal != 0 || len(s.ConnectFailures) != 0 || res.ErrorCount() != 0 {
				t.Errorf("a drain counted as errors %v / connect failures %v", s.Errors, s.ConnectFailures)
			}
			if s.DrainedUnanswered < 0 || s.DrainedUnanswered > phones*4 || s.Sends < s.RoundTrips+s.DrainedUnanswered {
				t.Errorf("unanswered %d of sends %d, round trips %d", s.DrainedUnanswered, s.Sends, s.RoundTrips)
			}
		})
	}
}
