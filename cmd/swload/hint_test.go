package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"switchboard/internal/relaytest"
	"switchboard/loop"
)

// TestRateLimitHint: against a relay whose per-IP upgrade limit is small,
// swload from one source address is refused 429 and says, once, what that
// is and what to do about it.
func TestRateLimitHint(t *testing.T) {
	// Two upgrades at once, and no more within the test: the two binaries
	// take them, every phone is refused.
	relay := relaytest.Start(t, loop.Config{RateLimitBurst: 2, RateLimitInterval: time.Hour})
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := Run(ctx, Config{Mode: modeIdle, Addr: relay.Addr, Phones: 8, PhonesPerBinary: 4, SourceIPs: -1,
		Hold: 100 * time.Millisecond, Progress: -1}, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stdout:\n%s", stdout.String())
	s := summaryOf(t, stdout.String())
	if s.ConnectFailures["http_429"] != 8 || s.ConnectsOK != 0 || exitCode(res) != 1 {
		t.Errorf("connect failures %v, connects %d, exit %d; want http_429=8, 0, 1", s.ConnectFailures, s.ConnectsOK, exitCode(res))
	}
	hints := strings.Count(stdout.String(), "hint: ")
	want := fmt.Sprintf("hint: the relay's per-IP upgrade rate limit refused %d upgrades", 8)
	if hints != 1 || !strings.Contains(stdout.String(), want) || !strings.Contains(stdout.String(), "--rate-limit-burst 0") {
		t.Errorf("%d hint lines, want one saying %q and naming --rate-limit-burst 0", hints, want)
	}
	// --progress off (Progress < 0, what --progress 0 becomes): no line.
	if stderr.Len() != 0 {
		t.Errorf("stderr with progress off:\n%s", stderr.String())
	}
}

// TestProgressZero: --progress 0 is accepted and prints no progress line
// (with workers: TestWorkerProcesses).
func TestProgressZero(t *testing.T) {
	addr := startRelay(t)
	var out, errb bytes.Buffer
	if code := run([]string{"--addr", addr, "--phones", "4", "--hold", "600ms", "--progress", "0"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("exit %d:\n%s\n%s", code, errb.String(), out.String())
	}
	if errb.Len() != 0 || summaryOf(t, out.String()).ConnectsOK != 4 {
		t.Errorf("stderr %q, want none; stdout:\n%s", errb.String(), out.String())
	}
	if strings.Contains(out.String(), "hint: ") {
		t.Errorf("a hint without a reason:\n%s", out.String())
	}
}
