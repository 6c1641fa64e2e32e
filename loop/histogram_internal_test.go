package loop

import (
	"strings"
	"testing"
	"time"

	"switchboard/internal/promtext"
)

func TestHistogramBucketsAreInclusiveUpperBounds(t *testing.T) {
	b := newHistBounds(time.Microsecond, time.Millisecond)
	for _, c := range []struct {
		ns   int64
		want int
	}{{-5, 0}, {0, 0}, {1000, 0}, {1001, 1}, {1_000_000, 1}, {1_000_001, 2}} {
		if got := b.bucket(c.ns); got != c.want {
			t.Errorf("bucket(%d) = %d, want %d", c.ns, got, c.want)
		}
	}
	for _, bounds := range []histBounds{outboxWaitBounds, upgradeBounds} {
		if len(bounds) > maxHistBounds {
			t.Fatalf("%d bounds, room for %d", len(bounds), maxHistBounds)
		}
	}
}

func TestHistogramExposition(t *testing.T) {
	b := newHistBounds(time.Microsecond, time.Millisecond)
	var h histogram
	h.observe(b, 500) // 0.5 µs
	h.observe(b, int64(2*time.Microsecond))
	h.observe(b, int64(2*time.Second)) // above every bound
	m := metricWriter{}
	m.family("x_seconds", "histogram", "Test.")
	m.histogram(`k="v"`, b, &h)
	fams, err := promtext.Parse(string(m.b))
	if err != nil {
		t.Fatalf("%v\n%s", err, m.b)
	}
	for le, want := range map[string]float64{"1e-06": 1, "0.001": 2, "+Inf": 3} {
		if v, ok := promtext.Value(fams, "x_seconds", "x_seconds_bucket", map[string]string{"k": "v", "le": le}); !ok || v != want {
			t.Errorf("bucket le=%s: %v, %v; want %v", le, v, ok, want)
		}
	}
	if v, _ := promtext.Value(fams, "x_seconds", "x_seconds_count", map[string]string{"k": "v"}); v != 3 {
		t.Errorf("_count %v, want 3", v)
	}
	if v, _ := promtext.Value(fams, "x_seconds", "x_seconds_sum", map[string]string{"k": "v"}); v < 2 || v > 2.0001 {
		t.Errorf("_sum %v, want about 2.0000025", v)
	}
	if !strings.Contains(string(m.b), "# TYPE x_seconds histogram\n") {
		t.Fatalf("no TYPE line:\n%s", m.b)
	}
}
