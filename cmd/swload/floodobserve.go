package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Watching the relay during a flood: its resident set (--relay-pid, read
// from /proc) and its /metrics page (--metrics-url).

// readRSS returns VmRSS of pid in bytes.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fs := strings.Fields(rest)
			if len(fs) == 2 && fs[1] == "kB" {
				kb, err := strconv.ParseInt(fs[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

func (f *flood) sampleRSS() {
	v, err := readRSS(f.cfg.RelayPID)
	if err != nil {
		f.rssErrs.Add(1)
		return
	}
	f.rssSamples.Add(1)
	f.rssLast.Store(v)
	if v > f.rssPeak.Load() {
		f.rssPeak.Store(v) // one sampler goroutine: no lost update
		f.rssPeakAt.Store(int64(f.since()))
	}
	if v > f.cfg.MaxRSS {
		f.abort()
	}
}

// metricsSampler polls --metrics-url.
type metricsSampler struct {
	url        string
	client     *http.Client
	mu         sync.Mutex
	samples    int64
	errs       int64
	bufPeak    int64
	pausedPeak int64
	last       map[string]float64
}

func newMetricsSampler(u string) *metricsSampler {
	return &metricsSampler{url: u, client: &http.Client{Timeout: 2 * time.Second}, bufPeak: -1, pausedPeak: -1}
}

func (m *metricsSampler) sample() {
	vals, err := fetchMetrics(m.client, m.url)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.errs++
		return
	}
	m.samples++
	m.last = vals
	if v, ok := vals["switchboard_buffered_bytes"]; ok {
		m.bufPeak = max(m.bufPeak, int64(v))
	}
	if v, ok := vals["switchboard_read_paused"]; ok {
		m.pausedPeak = max(m.pausedPeak, int64(v))
	}
}

func (m *metricsSampler) summary() *MetricSummary {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &MetricSummary{Samples: m.samples, FetchErrors: m.errs, BufferedBytesPeak: m.bufPeak, ReadPausedPeak: m.pausedPeak,
		ReadPausesTotal: -1, ReadPauses: map[string]int64{}, Closes: map[string]int64{}, Drops: map[string]int64{}}
	for k, v := range m.last {
		name, reason := splitMetric(k)
		if v == 0 {
			if name == "switchboard_read_pauses_total" && s.ReadPausesTotal < 0 {
				s.ReadPausesTotal = 0
			}
			continue
		}
		switch name {
		case "switchboard_read_pauses_total":
			s.ReadPausesTotal = max(s.ReadPausesTotal, 0) + int64(v)
			s.ReadPauses[reason] += int64(v)
		case "switchboard_closes_total":
			s.Closes[reason] += int64(v)
		case "switchboard_drops_total":
			s.Drops[reason] += int64(v)
		}
	}
	return s
}

// fetchMetrics reads a Prometheus text page into series → value.
func fetchMetrics(c *http.Client, u string) (map[string]float64, error) {
	resp, err := c.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil, fmt.Errorf("metrics: HTTP %d", resp.StatusCode)
	}
	return parseMetrics(io.LimitReader(resp.Body, 16<<20))
}

func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[strings.TrimSpace(line[:i])] = v
	}
	return out, sc.Err()
}

// splitMetric splits `name{reason="x"}` into name and x.
func splitMetric(series string) (name, reason string) {
	name, labels, ok := strings.Cut(series, "{")
	if !ok {
		return series, ""
	}
	if _, rest, ok := strings.Cut(labels, `reason="`); ok {
		reason, _, _ = strings.Cut(rest, `"`)
	}
	return name, reason
}
