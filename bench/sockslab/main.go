// Command sockslab measures what the kernel holds for one idle connection
// between a balancer and a relay on the same box: a loopback TCP pair
// against a unix socket pair (docs/deployment.md, "Balancer and relay on
// one box: a unix socket"). Each run opens -n connections of one kind, both
// ends in this process and each end in an epoll set as HAProxy and netpoll
// keep them, and reads the Slab line of /proc/meminfo (and /proc/slabinfo,
// where readable) before and after; runs alternate the kinds, and the
// report is the median bytes per connection (both sockets) of each kind.
//
// Slab is machine-wide: other processes opening or closing sockets during a
// run move it too. Each run compares /proc/net/sockstat's counts (sockets
// in use, TIME_WAIT entries) before and with its connections open; a run
// in which more than a handful came or went besides its own is discarded
// and tried again, and the medians are of undisturbed runs only.
//
//	go run ./bench/sockslab -n 4000 -runs 5
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"time"
)

// settle is how long a run waits after opening its connections before it
// reads the counters, and after closing them before the next run: freed
// sockets go back to their caches after an RCU grace period.
const settle = 500 * time.Millisecond

func main() {
	n := flag.Int("n", 4000, "connections per run (each is two sockets, so 2n descriptors)")
	runs := flag.Int("runs", 5, "runs of each kind, interleaved")
	epoll := flag.Bool("epoll", true, "put both ends of every connection in an epoll set, as HAProxy and the relay do")
	top := flag.Int("top", 6, "slab caches to list per kind, largest median growth first (needs a readable /proc/slabinfo)")
	flag.Parse()
	if err := run(*n, *runs, *epoll, *top); err != nil {
		fmt.Fprintf(os.Stderr, "sockslab: %v\n", err)
		os.Exit(1)
	}
}

func run(n, runs int, epoll bool, top int) error {
	kinds := []kind{tcpKind, unixKind}
	perConn := map[string][]float64{}
	caches := map[string]map[string][]float64{}
	clean := func() bool { return len(perConn["tcp"]) >= runs && len(perConn["unix"]) >= runs }
	for attempt := 1; !clean(); attempt++ {
		if attempt > maxAttempts*runs {
			return fmt.Errorf("only %d tcp and %d unix runs of %d were undisturbed in %d attempts: other processes are opening and closing sockets; try again when they are done",
				len(perConn["tcp"]), len(perConn["unix"]), runs, attempt-1)
		}
		for _, k := range kinds {
			if len(perConn[k.name]) >= runs {
				continue
			}
			m, err := measure(k, n, epoll)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", k.name, attempt, err)
			}
			verdict := "kept"
			if d := m.disturbance(n); d > tolerance(n) {
				verdict = fmt.Sprintf("DISCARDED: %d sockets (or TIME_WAIT entries) came or went meanwhile", d)
			}
			fmt.Printf("run %2d %-4s sockets %6d -> %6d  tw %6d -> %6d  slab %+10d B  %6.0f B/conn  %s\n",
				attempt, k.name, m.before.sockets, m.after.sockets, m.before.tw, m.after.tw, m.slabDelta, m.perConn(n), verdict)
			if verdict != "kept" {
				continue
			}
			perConn[k.name] = append(perConn[k.name], m.perConn(n))
			if caches[k.name] == nil {
				caches[k.name] = map[string][]float64{}
			}
			for name, d := range m.caches {
				caches[k.name][name] = append(caches[k.name][name], float64(d)/float64(n))
			}
		}
	}
	fmt.Printf("\nn=%d runs=%d epoll=%v: median kernel slab per idle connection (both sockets), undisturbed runs only\n", n, runs, epoll)
	for _, k := range kinds {
		fmt.Printf("  %-4s %6.0f B   (runs: %v)\n", k.name, median(perConn[k.name]), rounded(perConn[k.name]))
	}
	fmt.Printf("  saved by a unix socket: %.0f B per connection\n", median(perConn["tcp"])-median(perConn["unix"]))
	for _, k := range kinds {
		if len(caches[k.name]) == 0 {
			continue
		}
		fmt.Printf("\n%s: slab caches, median growth per connection (names as /proc/slabinfo shows them: merged caches go by one name)\n", k.name)
		for _, c := range topCaches(caches[k.name], top) {
			fmt.Printf("  %-20s %6.0f B\n", c, median(caches[k.name][c]))
		}
	}
	return nil
}

// maxAttempts bounds the attempts at an undisturbed run, per run asked for.
const maxAttempts = 4

// tolerance is how many sockets may come or go elsewhere during a run
// before it is discarded: a few are daemons' own; hundreds are a load run.
func tolerance(n int) int { return max(10, n/200) }

// measurement is one run's deltas.
type measurement struct {
	before, after sockstat // after: with the run's connections open
	slabDelta     int64
	caches        map[string]int64 // bytes by cache, from /proc/slabinfo
}

func (m measurement) perConn(n int) float64 { return float64(m.slabDelta) / float64(n) }

// disturbance is how many sockets and TIME_WAIT entries besides the run's
// own 2n connection ends and its listener came or went during it.
func (m measurement) disturbance(n int) int {
	abs := func(x int) int { return max(x, -x) }
	return abs(m.after.sockets-m.before.sockets-(2*n+1)) + abs(m.after.tw-m.before.tw)
}

func measure(k kind, n int, epoll bool) (measurement, error) {
	var m measurement
	var err error
	if m.before, err = readSockstat(); err != nil {
		return m, err
	}
	before, err := readSlab()
	if err != nil {
		return m, err
	}
	set, err := k.open(n, epoll)
	if err != nil {
		return m, err
	}
	time.Sleep(settle)
	after, err := readSlab()
	if err == nil {
		m.after, err = readSockstat()
	}
	set.close()
	time.Sleep(settle)
	if err != nil {
		return m, err
	}
	m.slabDelta = after.total - before.total
	m.caches = map[string]int64{}
	for name, b := range after.caches {
		if d := b - before.caches[name]; d != 0 {
			m.caches[name] = d
		}
	}
	return m, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func rounded(v []float64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x + 0.5)
	}
	return out
}

// topCaches are the k caches with the largest median growth.
func topCaches(c map[string][]float64, k int) []string {
	names := make([]string, 0, len(c))
	for name := range c {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		ma, mb := median(c[a]), median(c[b])
		switch {
		case ma > mb:
			return -1
		case ma < mb:
			return 1
		}
		return 0
	})
	return names[:min(k, len(names))]
}
