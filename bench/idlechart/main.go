// Command idlechart draws docs/idle-memory.svg, relay memory against idle
// connections, from the lines BenchmarkIdleCurve appends to its -curve-out
// file (relay, connections, RSS bytes, heap+stack bytes; one run after
// another), and prints the same points as a Markdown table. Each point is
// the median over the runs in the file. It writes the SVG by hand: no
// plotting dependency.
//
//	go run ./bench/idlechart -in bench/idle-curve.tsv -out docs/idle-memory.svg
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

func main() {
	in := flag.String("in", "bench/idle-curve.tsv", "BenchmarkIdleCurve's -curve-out file")
	out := flag.String("out", "docs/idle-memory.svg", "the SVG to write")
	flag.Parse()
	pts, err := read(*in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "idlechart:", err)
		os.Exit(1)
	}
	f, err := os.Create(*out)
	if err == nil {
		err = draw(f, pts)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "idlechart: writing", *out+":", err)
		os.Exit(1)
	}
	table(os.Stdout, pts)
}

// point is one relay at one connection count: medians over the runs.
type point struct {
	relay      string
	conns      int
	rss, user  float64 // bytes
	runs       int
	rssSpread  [2]float64
	userSpread [2]float64
}

func read(path string) ([]point, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	type key struct {
		relay string
		conns int
	}
	rss, user := map[key][]float64{}, map[key][]float64{}
	var order []key
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 || strings.HasPrefix(fs[0], "#") {
			continue
		}
		if len(fs) != 4 {
			return nil, fmt.Errorf("%s:%d: want relay, connections, RSS, heap+stack; got %q", path, n, sc.Text())
		}
		c, err1 := strconv.Atoi(fs[1])
		r, err2 := strconv.ParseFloat(fs[2], 64)
		u, err3 := strconv.ParseFloat(fs[3], 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("%s:%d: not numbers: %q", path, n, sc.Text())
		}
		k := key{fs[0], c}
		if _, seen := rss[k]; !seen {
			order = append(order, k)
		}
		rss[k], user[k] = append(rss[k], r), append(user[k], u)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(order) == 0 {
		return nil, fmt.Errorf("%s: no points", path)
	}
	var pts []point
	for _, k := range order {
		rm, rs := median(rss[k])
		um, us := median(user[k])
		pts = append(pts, point{k.relay, k.conns, rm, um, len(rss[k]), rs, us})
	}
	slices.SortStableFunc(pts, func(a, b point) int {
		if a.relay != b.relay {
			return strings.Compare(a.relay, b.relay)
		}
		return a.conns - b.conns
	})
	return pts, nil
}

// median returns the median of v and its smallest and largest values.
func median(v []float64) (float64, [2]float64) {
	s := slices.Sorted(slices.Values(v))
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return m, [2]float64{s[0], s[len(s)-1]}
}

// Chart geometry, in SVG user units.
const (
	width, height          = 720, 420
	left, right, top, bott = 70, 80, 40, 60
)

// colours per relay; others get grey.
var colours = map[string]string{"switchboard": "#1f77b4", "baseline": "#d62728"}

func draw(w io.Writer, pts []point) error {
	maxC, maxR := 0.0, 0.0
	for _, p := range pts {
		maxC, maxR = max(maxC, float64(p.conns)), max(maxR, p.rss/1e6)
	}
	xStep, yStep := niceStep(maxC), niceStep(maxR)
	xMax, yMax := ceilTo(maxC, xStep), ceilTo(maxR, yStep)
	pw, ph := float64(width-left-right), float64(height-top-bott)
	x := func(c float64) float64 { return left + c/xMax*pw }
	y := func(mb float64) float64 { return top + ph - mb/yMax*ph }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">Relay memory (RSS per process) against idle connections</text>`+"\n", left)
	for v := 0.0; v <= yMax+yStep/2; v += yStep {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), width-right, y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y(v)+4, label(v))
	}
	for v := 0.0; v <= xMax+xStep/2; v += xStep {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x(v), top, x(v), height-bott)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(v), height-bott+18, label(v))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#333"/>`+"\n", left, top, pw, ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">connections held by the relay (phones + their binaries)</text>`+"\n", left+pw/2, height-16)
	fmt.Fprintf(&b, `<text x="18" y="%.1f" text-anchor="middle" transform="rotate(-90 18 %.1f)">RSS, MB</text>`+"\n", top+ph/2, top+ph/2)

	var relays []string
	for _, p := range pts {
		if !slices.Contains(relays, p.relay) {
			relays = append(relays, p.relay)
		}
	}
	for i, r := range relays {
		col := colours[r]
		if col == "" {
			col = "#777"
		}
		var line []string
		for _, p := range pts {
			if p.relay == r {
				line = append(line, fmt.Sprintf("%.1f,%.1f", x(float64(p.conns)), y(p.rss/1e6)))
			}
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(line, " "), col)
		for _, p := range pts {
			if p.relay == r {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: %d connections, %.1f MB</title></circle>`+"\n",
					x(float64(p.conns)), y(p.rss/1e6), col, r, p.conns, p.rss/1e6)
			}
		}
		last := pts[slices.IndexFunc(pts, func(p point) bool { return p.relay == r })]
		for _, p := range pts {
			if p.relay == r {
				last = p
			}
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="%s">%.0f MB</text>`+"\n", x(float64(last.conns))+8, y(last.rss/1e6)+4, col, last.rss/1e6)
		ly := top + 18 + 20*i // legend: top left, inside the plot, above the low Switchboard line
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", left+12, ly, left+32, ly, col)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", left+38, ly+4, r)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// niceStep is a 1, 2 or 5 × 10^k grid step giving four to ten lines up to v.
func niceStep(v float64) float64 {
	step := 1.0
	for v/step > 10 {
		for _, m := range []float64{2, 2.5, 2} {
			step *= m
			if v/step <= 10 {
				return step
			}
		}
	}
	return step
}

func ceilTo(v, step float64) float64 {
	n := float64(int(v/step)) * step
	if n < v {
		n += step
	}
	return n
}

// label writes an axis value: 2000 as "2,000", 0.5 as "0.5".
func label(v float64) string {
	if v != float64(int64(v)) {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	s := strconv.FormatInt(int64(v), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// table prints the points as the Markdown table beside the chart.
func table(w io.Writer, pts []point) {
	fmt.Fprintln(w, "| relay | connections | RSS, MB | heap + stacks, MB | runs |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, p := range pts {
		fmt.Fprintf(w, "| %s | %s | %.1f (%.1f–%.1f) | %.1f | %d |\n", p.relay, label(float64(p.conns)),
			p.rss/1e6, p.rssSpread[0]/1e6, p.rssSpread[1]/1e6, p.user/1e6, p.runs)
	}
}
