package bench

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

var (
	flagCurve    = flag.String("curve", "1000,2000,4000,8000,16000", "BenchmarkIdleCurve: relay-side connection counts (phones + their binaries) to measure at, ascending; each relay process holds the largest, so keep it under the 20,000 open files a process may have here")
	flagCurveOut = flag.String("curve-out", "", "BenchmarkIdleCurve: append one line per point (relay, connections, RSS bytes, heap+stack bytes) to this file; bench/idlechart draws it")
)

// BenchmarkIdleCurve grows one fleet of idle phones (each has sent one frame
// and had it echoed, as in BenchmarkIdle) on each relay and measures the
// relay process at every count in -curve: RSS from /proc, and heap+stack in
// use after a forced GC. The whole process is counted, fixed costs
// included: this is what a box sees, where BenchmarkIdle's slope is what
// one more connection adds. Run it with -benchtime=1x.
func BenchmarkIdleCurve(b *testing.B) {
	points, err := parseCurve(*flagCurve)
	if err != nil {
		b.Fatal(err)
	}
	for _, impl := range relayImpls {
		b.Run(impl, func(b *testing.B) {
			p := startRelayProc(b, impl)
			var f fleet
			defer f.close()
			var lines []string
			for _, target := range points {
				// phones + ceil(phones/16) binaries reaches the target.
				phones := (target*phonesPerBinary + phonesPerBinary) / (phonesPerBinary + 1)
				if more := phones - len(f.phones); more > 0 {
					f.grow(b, p.addr, more)
				}
				m := p.mem(b) // forces a GC first
				rss := p.rss(b)
				lines = append(lines, fmt.Sprintf("%s\t%d\t%d\t%d\n", impl, f.conns(), rss, m.user()))
				b.Logf("%s: %d connections, RSS %.1f MB, heap+stack %.1f MB", impl, f.conns(), float64(rss)/1e6, float64(m.user())/1e6)
			}
			for range b.N {
			}
			if *flagCurveOut != "" {
				appendLines(b, *flagCurveOut, lines)
			}
		})
	}
}

func parseCurve(s string) ([]int, error) {
	var points []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || (len(points) > 0 && n <= points[len(points)-1]) {
			return nil, fmt.Errorf("-curve %q: want ascending positive connection counts", s)
		}
		points = append(points, n)
	}
	return points, nil
}

func appendLines(tb testing.TB, path string, lines []string) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		tb.Fatalf("opening the curve file: %v", err)
	}
	defer f.Close()
	if _, err := f.WriteString(strings.Join(lines, "")); err != nil {
		tb.Fatalf("writing the curve file: %v", err)
	}
}
