package loop_test

import (
	"fmt"
	"testing"
	"time"

	"switchboard/loop"
)

// The two latency histograms move with real traffic: every relayed frame
// is one outbox wait, every upgrade attempt on /v1/server or /v1/client
// (accepted, refused by the registry after its 101, or refused before it)
// is one upgrade duration under its endpoint.
func TestLatencyHistogramsCountTraffic(t *testing.T) {
	r := startRelay(t, loop.Config{})
	const (
		waitCount  = "switchboard_outbox_wait_seconds_count"
		serverUps  = `switchboard_upgrade_duration_seconds_count{endpoint="server"}`
		clientUps  = `switchboard_upgrade_duration_seconds_count{endpoint="client"}`
		roundTrips = 5
	)
	before := scrape(t, r)
	for _, name := range []string{waitCount, serverUps, clientUps,
		`switchboard_outbox_wait_seconds_bucket{le="1e-05"}`, `switchboard_outbox_wait_seconds_bucket{le="+Inf"}`,
		`switchboard_upgrade_duration_seconds_bucket{endpoint="client",le="2.5e-05"}`,
		`switchboard_upgrade_duration_seconds_bucket{endpoint="server",le="+Inf"}`} {
		if _, ok := before[name]; !ok {
			t.Fatalf("missing series %s", name)
		}
	}

	b := r.binary(t, "lat")
	p := r.phone(t, "lat")
	for i := range roundTrips {
		roundTrip(t, p, b, fmt.Sprint(i))
	}
	nobody, _, err := dial(t, r.Addr, "/v1/client", phoneHeaders("nobody")) // 101, then 4404
	if err != nil {
		t.Fatal(err)
	}
	nobody.expectClose(t, 4404, "no server with that id")
	rc := rawDial(t, r.Addr) // refused before any 101: no token
	rc.write([]byte(requestHead("/v1/client", withUpgrade([]string{"X-Pyrycode-Server: lat", "User-Agent: raw-test/1"})...)))
	if resp, _ := rc.response(); resp.StatusCode != 400 {
		t.Fatalf("upgrade without a token: status %d, want 400", resp.StatusCode)
	}

	// A writer observes after its write returns, which may be just after
	// the peer has read what it wrote: wait for the counts, not a time.
	var after map[string]uint64
	waitFor(t, "upgrades timed", func() bool {
		after = scrape(t, r)
		return after[serverUps]-before[serverUps] == 1 && after[clientUps]-before[clientUps] == 3
	})
	// 2 × roundTrips frames relayed, plus the two accepted 101s (the refused
	// ones and the close frames may or may not have been counted yet).
	if got := after[waitCount] - before[waitCount]; got < 2*roundTrips+2 {
		t.Errorf("%s moved by %d, want at least %d", waitCount, got, 2*roundTrips+2)
	}
	if inf := `switchboard_outbox_wait_seconds_bucket{le="+Inf"}`; after[inf] != after[waitCount] {
		t.Errorf("+Inf bucket %d, _count %d", after[inf], after[waitCount])
	}
}

// An upgrade is timed from the head's first byte, not its last: a head
// sent in two parts a known time apart lands in a bucket above that gap.
func TestUpgradeDurationStartsAtTheFirstByte(t *testing.T) {
	r := startRelay(t, loop.Config{})
	const (
		gap     = 60 * time.Millisecond
		count   = `switchboard_upgrade_duration_seconds_count{endpoint="server"}`
		belowUp = `switchboard_upgrade_duration_seconds_bucket{endpoint="server",le="0.05"}` // below gap
	)
	before := scrape(t, r)
	head := requestHead("/v1/server", withUpgrade(rawBinaryLines("slow"))...)
	rc := rawDial(t, r.Addr)
	rc.write([]byte(head[:20]))
	time.Sleep(gap) // the delay being measured, not a synchronisation
	rc.write([]byte(head[20:]))
	if resp, _ := rc.response(); resp.StatusCode != 101 {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	var after map[string]uint64
	waitFor(t, "the upgrade timed", func() bool {
		after = scrape(t, r)
		return after[count] > before[count]
	})
	if after[belowUp] != before[belowUp] {
		t.Fatalf("an upgrade whose head took %v to arrive was counted at 50 ms or less", gap)
	}
}
