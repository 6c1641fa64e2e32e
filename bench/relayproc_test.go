package bench

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"switchboard/internal/relaytest"
)

// Relays under test run as their own processes, so their CPU time, memory
// and goroutines are measured apart from the clients driving them.
var relayImpls = []string{"switchboard", "baseline"}

func TestMain(m *testing.M) { relaytest.Main(m) }

// relayProc is a relay process on loopback ports.
type relayProc struct {
	proc  *relaytest.Process
	addr  string // main listener
	admin string // pprof listener
}

func startRelayProc(tb testing.TB, impl string) *relayProc {
	tb.Helper()
	p := &relayProc{addr: relaytest.FreeAddr(tb), admin: relaytest.FreeAddr(tb)}
	var c relaytest.Command
	switch impl {
	case "switchboard":
		c.Path = relaytest.Build(tb, "switchboard/cmd/switchboard")
		c.Args = []string{"--listen", p.addr, "--admin-listen", p.admin, "--pprof", "--log-level", "warn",
			"--max-connections", "19500", "--rate-limit-burst", "0"}
	case "baseline":
		c.Path = relaytest.Build(tb, "switchboard/cmd/baseline-relay")
		c.Args = []string{"--listen", p.addr, "--admin-listen", p.admin, "--claim-before-upgrade", "--log-level", "warn"}
	default:
		tb.Fatalf("unknown relay %q", impl)
	}
	if *flagRelayCPUs != "" {
		// taskset execs the relay: same pid, so /proc and the admin
		// endpoints still describe the relay alone.
		path, err := exec.LookPath("taskset")
		if err != nil {
			tb.Fatalf("-relay-cpus needs taskset: %v", err)
		}
		c.Path, c.Args = path, append([]string{"-c", *flagRelayCPUs, c.Path}, c.Args...)
	}
	if *flagHeapProfile != "" {
		// Every allocation sampled, so the profile's inuse_space is exact
		// rather than scaled from a 512 KiB sampling interval.
		c.Env = append(os.Environ(), "GODEBUG=memprofilerate=1")
	}
	c.Tee = os.Stderr
	c.StopGrace = 15 * time.Second
	p.proc = relaytest.Exec(tb, c)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + p.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s did not come up: %v", impl, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cpu returns the process's user+system CPU time so far.
func (p *relayProc) cpu(tb testing.TB) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.proc.Cmd.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// rss returns the process's resident set size in bytes.
func (p *relayProc) rss(tb testing.TB) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.proc.Cmd.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// memStats is what the relay's heap profile reports after a forced GC.
type memStats struct {
	heapInuse, stackInuse, mallocs int64
}

func (m memStats) user() int64 { return m.heapInuse + m.stackInuse }

// mem asks the relay's pprof endpoint for a heap profile with gc=1: the
// runtime collects first and prints its MemStats at the end.
func (p *relayProc) mem(tb testing.TB) memStats {
	body := p.get(tb, "/debug/pprof/heap?gc=1&debug=1")
	var m memStats
	for _, line := range strings.Split(body, "\n") {
		switch {
		case strings.HasPrefix(line, "# HeapInuse = "):
			m.heapInuse, _ = strconv.ParseInt(strings.TrimPrefix(line, "# HeapInuse = "), 10, 64)
		case strings.HasPrefix(line, "# Stack = "):
			m.stackInuse, _ = strconv.ParseInt(strings.Fields(strings.TrimPrefix(line, "# Stack = "))[0], 10, 64)
		case strings.HasPrefix(line, "# Mallocs = "):
			m.mallocs, _ = strconv.ParseInt(strings.TrimPrefix(line, "# Mallocs = "), 10, 64)
		}
	}
	if m.heapInuse == 0 {
		tb.Fatalf("no MemStats in heap profile")
	}
	return m
}

// metric returns one unlabelled series from the relay's /metrics, or -1 when
// the relay does not export it (the baseline has no metrics).
func (p *relayProc) metric(tb testing.TB, name string) float64 {
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil || resp.StatusCode != 200 {
		if resp != nil {
			resp.Body.Close()
		}
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// goroutines returns the relay's goroutine count.
func (p *relayProc) goroutines(tb testing.TB) int {
	body := p.get(tb, "/debug/pprof/goroutine?debug=1")
	line, _, _ := strings.Cut(body, "\n")
	n, err := strconv.Atoi(strings.TrimPrefix(line, "goroutine profile: total "))
	if err != nil {
		tb.Fatalf("goroutine profile header %q", line)
	}
	return n
}

func (p *relayProc) get(tb testing.TB, path string) string {
	resp, err := http.Get("http://" + p.admin + path)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}
