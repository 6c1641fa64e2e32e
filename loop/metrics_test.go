package loop_test

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"switchboard/internal/promtext"
	"switchboard/loop"
)

var sampleLine = regexp.MustCompile(`^([a-z_]+)(\{(?:[a-z_]+="[a-z0-9_]+",)*(?:(le)="(?:[0-9.e+-]+|\+Inf)"|[a-z_]+="[a-z0-9_]+")\})? ([0-9.e+-]+)$`)

// scrape parses the relay's exposition strictly enough to catch a broken
// format: every family has one HELP and one TYPE before its samples, and
// every sample is name{labels} value with label values from fixed sets
// (plus a histogram bucket's le). internal/promtext then checks what a
// Prometheus server checks: no family split or repeated, buckets cumulative.
// Values are kept as integers: a histogram's _sum is the only fraction.
func scrape(t *testing.T, r *relay) map[string]uint64 {
	t.Helper()
	var buf bytes.Buffer
	if err := r.WriteMetrics(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := promtext.Parse(buf.String()); err != nil {
		t.Fatalf("exposition refused: %v", err)
	}
	samples := map[string]uint64{}
	helped, typed, histograms := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "# HELP "):
			name := strings.Fields(line)[2]
			if helped[name] {
				t.Fatalf("second HELP for %s", name)
			}
			helped[name] = true
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(line)
			if typed[f[2]] || (f[3] != "counter" && f[3] != "gauge" && f[3] != "histogram") {
				t.Fatalf("bad TYPE line %q", line)
			}
			typed[f[2]] = true
			histograms[f[2]] = f[3] == "histogram"
			if f[3] == "counter" != strings.HasSuffix(f[2], "_total") {
				t.Fatalf("counter naming: %q", line)
			}
		default:
			m := sampleLine.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("bad sample line %q", line)
			}
			family := m[1]
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(m[1], suffix); ok && histograms[base] {
					family = base
				}
			}
			if !helped[family] || !typed[family] {
				t.Fatalf("sample before its HELP/TYPE: %q", line)
			}
			if (m[3] != "") != strings.HasSuffix(m[1], "_bucket") {
				t.Fatalf("le label on a sample other than a bucket, or a bucket without: %q", line)
			}
			v, err := strconv.ParseFloat(m[4], 64)
			if err != nil {
				t.Fatalf("bad value in %q", line)
			}
			samples[m[1]+m[2]] = uint64(v)
		}
	}
	return samples
}

func TestMetricsFamiliesAndTraffic(t *testing.T) {
	r := startRelay(t, loop.Config{})
	before := scrape(t, r)
	for _, name := range []string{
		"pyrycode_relay_connected_binaries",
		"pyrycode_relay_connected_phones",
		`pyrycode_relay_frames_forwarded_total{direction="phone_to_binary"}`,
		`pyrycode_relay_frames_forwarded_total{direction="binary_to_phone"}`,
		"pyrycode_relay_grace_expiries_total",
		`pyrycode_relay_ws_upgrade_attempts_total{endpoint="server",outcome="accept"}`,
		`pyrycode_relay_ws_upgrade_attempts_total{endpoint="client",outcome="reject_404"}`,
		`pyrycode_relay_ws_upgrade_attempts_total{endpoint="client",outcome="reject_429"}`,
		`pyrycode_relay_ws_upgrade_attempts_total{endpoint="server",outcome="reject_409"}`,
		`pyrycode_relay_ws_upgrade_attempts_total{endpoint="client",outcome="reject_headers"}`,
		`pyrycode_relay_ws_upgrade_attempts_total{endpoint="client",outcome="reject_rate_limit"}`,
		`pyrycode_relay_register_failures_total{kind="no_server"}`,
		`pyrycode_relay_register_failures_total{kind="server_in_use"}`,
		`pyrycode_relay_register_failures_total{kind="phones_at_cap"}`,
		`pyrycode_relay_register_failures_total{kind="ratelimit"}`,
		`pyrycode_relay_push_wakes_total{outcome="dropped"}`,
		`switchboard_drops_total{reason="bad_envelope"}`,
		`switchboard_drops_total{reason="unknown_conn_id"}`,
		`switchboard_drops_total{reason="phone_backlog_full"}`,
		`switchboard_drops_total{reason="close_notice_lost"}`,
		`switchboard_drops_total{reason="pong_overflow"}`,
		`switchboard_drops_total{reason="ping_overflow"}`,
		`switchboard_drops_total{reason="discarded_on_close"}`,
		`switchboard_closes_total{reason="heartbeat_timeout"}`,
		`switchboard_closes_total{reason="write_failed"}`,
		`switchboard_closes_total{reason="read_timeout"}`,
		`switchboard_closes_total{reason="protocol_error"}`,
		`switchboard_closes_total{reason="too_big"}`,
		`switchboard_rejects_total{reason="missing_header"}`,
		"switchboard_outbox_bytes", "switchboard_staged_bytes", "switchboard_writers_active",
		"switchboard_read_tasks_queued", "switchboard_read_tasks_spilled_total", "switchboard_read_task_rescues_total",
		"switchboard_live_connections", "switchboard_max_connections",
	} {
		if _, ok := before[name]; !ok {
			t.Errorf("missing series %s", name)
		}
	}

	b := r.binary(t, "m1")
	p := r.phone(t, "m1")
	for i := 0; i < 3; i++ {
		roundTrip(t, p, b, fmt.Sprint(i))
	}
	b.send(t, `{"conn_id":"client-m1-00000000","frame":1}`) // unknown
	b.send(t, `not json`)                                   // bad envelope
	nobody, _, err := dial(t, r.Addr, "/v1/client", phoneHeaders("nobody"))
	if err != nil {
		t.Fatal(err)
	}
	nobody.expectClose(t, 4404, "no server with that id")
	waitFor(t, "drops counted, refused phone gone", func() bool {
		return r.Counters().Drop(loop.DropBadEnvelope) == 1 && r.Counters().Drop(loop.DropUnknownConnID) == 1 && r.Live() == 2
	})

	after := scrape(t, r)
	moved := map[string]uint64{
		"pyrycode_relay_connected_binaries":                                                1,
		"pyrycode_relay_connected_phones":                                                  1,
		`pyrycode_relay_frames_forwarded_total{direction="phone_to_binary"}`:               3,
		`pyrycode_relay_frames_forwarded_total{direction="binary_to_phone"}`:               3,
		`pyrycode_relay_ws_upgrade_attempts_total{endpoint="server",outcome="accept"}`:     1,
		`pyrycode_relay_ws_upgrade_attempts_total{endpoint="client",outcome="accept"}`:     1,
		`pyrycode_relay_ws_upgrade_attempts_total{endpoint="client",outcome="reject_404"}`: 1,
		`pyrycode_relay_register_failures_total{kind="no_server"}`:                         1,
		`switchboard_drops_total{reason="bad_envelope"}`:                                   1,
		`switchboard_drops_total{reason="unknown_conn_id"}`:                                1,
		"switchboard_live_connections":                                                     2,
	}
	for name, want := range moved {
		if got := after[name] - before[name]; got != want {
			t.Errorf("%s moved by %d, want %d", name, got, want)
		}
	}
	// No label value may come from a client: the server-id never appears.
	var buf bytes.Buffer
	_ = r.WriteMetrics(&buf)
	if strings.Contains(buf.String(), "m1") || strings.Contains(buf.String(), "nobody") {
		t.Fatal("a server-id leaked into the metrics")
	}
}
