package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// ResultPrefix starts the one machine-readable line of a run's stdout.
const ResultPrefix = "SWLOAD_RESULT "

// Result is one process's outcome, or the merge of several. Workers send it
// to the parent as JSON; histograms travel whole, so the merge is exact.
type Result struct {
	Mode     string `json:"mode"`
	Addr     string `json:"addr"`
	Procs    int    `json:"procs"`
	Phones   int    `json:"phones"`
	Binaries int    `json:"binaries"`
	Inflight int    `json:"inflight"`
	Size     int    `json:"size"`

	WindowS          float64 `json:"window_s"`      // hold (idle), duration (active, churn), as run
	RateTarget       float64 `json:"rate_target"`   // active --rate; 0 = closed loop
	Sends            int64   `json:"sends"`         // active: phone messages sent
	RateAchievedPerS float64 `json:"rate_achieved"` // active: sends per second of window
	RoundTrips       int64   `json:"round_trips"`
	WindowRoundTrips int64   `json:"window_round_trips"`
	ThroughputPerS   float64 `json:"throughput_per_s"`

	Latency         Histogram `json:"latency"`
	ConnectLatency  Histogram `json:"connect_latency"`
	SendLag         Histogram `json:"send_lag"`          // open loop: actual minus scheduled send time
	LatencyFromSend Histogram `json:"latency_from_send"` // open loop: round trip from the actual send

	Errors            map[string]int64 `json:"errors"`
	ConnectFailures   map[string]int64 `json:"connect_failures"`
	ConnectsAttempted int64            `json:"connects_attempted"`
	ConnectsOK        int64            `json:"connects_ok"`
	ConnectPhaseS     float64          `json:"connect_phase_s"`
	ConnectRatePerS   float64          `json:"connect_rate_per_s"`

	Cycles       int64 `json:"cycles"`
	PeakLive     int64 `json:"peak_live"`
	LiveAtEnd    int64 `json:"live_at_end_of_hold"`
	CloseNotices int64 `json:"close_notices"`
	Echoed       int64 `json:"echoed"`
	Reencoded    int64 `json:"reencoded"`
	Retries      int64 `json:"connect_retries"`

	DrainedPhones   int64 `json:"drained_phones"`   // closed 1001 by the relay (drain.go)
	DrainedBinaries int64 `json:"drained_binaries"` // the same, binaries
	Unanswered      int64 `json:"drained_unanswered"`

	CPUUserS float64 `json:"cpu_user_s"`
	CPUSysS  float64 `json:"cpu_sys_s"`

	Interrupted    bool `json:"interrupted"`
	TimedOut       bool `json:"timed_out"`
	WorkerFailures int  `json:"worker_failures"`

	Flood *FloodResult `json:"flood,omitempty"` // --mode flood
}

// fill copies the engine's counters into r (after the run ended).
func (r *Result) fill(e *engine) {
	r.Addr = e.cfg.target()
	r.RoundTrips = e.roundTrips.Load()
	r.WindowRoundTrips = e.windowTrips.Load()
	r.Latency = e.lat.snapshot()
	r.ConnectLatency = e.connLat.snapshot()
	r.SendLag = e.lag.snapshot()
	r.LatencyFromSend = e.latSend.snapshot()
	r.RateTarget = e.cfg.Rate
	r.Sends = e.sends.Load()
	r.Errors = e.errs.snapshot()
	r.ConnectFailures = e.connFails.snapshot()
	r.ConnectsAttempted = e.attempts.Load()
	r.ConnectsOK = e.connOK.Load()
	r.Cycles = e.cycles.Load()
	r.PeakLive = e.peakLive.Load()
	r.CloseNotices = e.notices.Load()
	r.Echoed = e.echoed.Load()
	r.Reencoded = e.reencoded.Load()
	r.Retries = e.retries.Load()
	r.DrainedPhones = e.drainedPhones.Load()
	r.DrainedBinaries = e.drainedBinaries.Load()
	r.Unanswered = e.unanswered.Load()
	if r.ConnectPhaseS > 0 {
		r.ConnectRatePerS = float64(r.ConnectsOK) / r.ConnectPhaseS
	}
	switch r.Mode {
	case modeActive:
		if r.WindowS > 0 {
			r.ThroughputPerS = float64(r.WindowRoundTrips) / r.WindowS
			r.RateAchievedPerS = float64(r.Sends) / r.WindowS
		}
	case modeChurn:
		r.WindowRoundTrips = r.RoundTrips
		if r.WindowS > 0 {
			r.ThroughputPerS = float64(r.RoundTrips) / r.WindowS
		}
	case modeIdle:
		if r.ConnectPhaseS > 0 {
			r.ThroughputPerS = float64(r.RoundTrips) / r.ConnectPhaseS
		}
	}
	r.CPUUserS, r.CPUSysS = cpuTimes(false)
}

// merge adds a worker's result. Rates add up (the workers ran side by
// side); phase lengths take the longest.
func (r *Result) merge(o *Result) {
	r.Procs += o.Procs
	r.Phones += o.Phones
	r.Binaries += o.Binaries
	r.WindowS = max(r.WindowS, o.WindowS)
	r.RoundTrips += o.RoundTrips
	r.WindowRoundTrips += o.WindowRoundTrips
	r.ThroughputPerS += o.ThroughputPerS
	r.RateTarget = max(r.RateTarget, o.RateTarget)
	r.Sends += o.Sends
	r.RateAchievedPerS += o.RateAchievedPerS
	r.Latency.Merge(&o.Latency)
	r.ConnectLatency.Merge(&o.ConnectLatency)
	r.SendLag.Merge(&o.SendLag)
	r.LatencyFromSend.Merge(&o.LatencyFromSend)
	r.Errors = addKinds(r.Errors, o.Errors)
	r.ConnectFailures = addKinds(r.ConnectFailures, o.ConnectFailures)
	r.ConnectsAttempted += o.ConnectsAttempted
	r.ConnectsOK += o.ConnectsOK
	r.ConnectPhaseS = max(r.ConnectPhaseS, o.ConnectPhaseS)
	r.ConnectRatePerS += o.ConnectRatePerS
	r.Cycles += o.Cycles
	r.PeakLive += o.PeakLive
	r.LiveAtEnd += o.LiveAtEnd
	r.CloseNotices += o.CloseNotices
	r.Echoed += o.Echoed
	r.Reencoded += o.Reencoded
	r.Retries += o.Retries
	r.DrainedPhones += o.DrainedPhones
	r.DrainedBinaries += o.DrainedBinaries
	r.Unanswered += o.Unanswered
	r.Interrupted = r.Interrupted || o.Interrupted
	r.TimedOut = r.TimedOut || o.TimedOut
	r.WorkerFailures += o.WorkerFailures
}

func addKinds(dst, src map[string]int64) map[string]int64 {
	if dst == nil {
		dst = map[string]int64{}
	}
	for k, v := range src {
		dst[k] += v
	}
	return dst
}

func sumKinds(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// ErrorCount is every error and connect failure.
func (r *Result) ErrorCount() int64 { return sumKinds(r.Errors) + sumKinds(r.ConnectFailures) }

// cpuTimes is this process's user and system CPU seconds, with its waited-
// for children (the workers) when children is set.
func cpuTimes(children bool) (user, sys float64) {
	add := func(who int) {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			user += time.Duration(ru.Utime.Nano()).Seconds()
			sys += time.Duration(ru.Stime.Nano()).Seconds()
		}
	}
	add(syscall.RUSAGE_SELF)
	if children {
		add(syscall.RUSAGE_CHILDREN)
	}
	return user, sys
}

// Percentiles in microseconds.
type Percentiles struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
}

func percentiles(h *Histogram) Percentiles {
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	return Percentiles{
		Count: h.N,
		P50:   us(h.Quantile(0.50)), P99: us(h.Quantile(0.99)), P999: us(h.Quantile(0.999)),
		Max: us(time.Duration(h.Max)), Mean: us(h.Mean()),
	}
}

// Summary is the SWLOAD_RESULT line.
type Summary struct {
	Mode              string           `json:"mode"`
	Addr              string           `json:"addr"`
	Procs             int              `json:"procs"`
	Phones            int              `json:"phones"`
	Binaries          int              `json:"binaries"`
	Inflight          int              `json:"inflight"`
	Size              int              `json:"size"`
	DurationS         float64          `json:"duration_s"`
	RateTarget        float64          `json:"rate_target"`   // messages/s asked for with --rate; 0 = closed loop
	Sends             int64            `json:"sends"`         // active: phone messages sent in the window
	RateAchieved      float64          `json:"rate_achieved"` // active: sends per second; the reply rate is throughput_per_s
	RoundTrips        int64            `json:"round_trips"`
	ThroughputPerS    float64          `json:"throughput_per_s"`
	LatencyUS         Percentiles      `json:"latency_us"`
	SendLagUS         Percentiles      `json:"send_lag_us,omitzero"`          // open loop only
	LatencyFromSendUS Percentiles      `json:"latency_from_send_us,omitzero"` // open loop only: uncorrected
	ConnectUS         Percentiles      `json:"connect_us"`
	Errors            map[string]int64 `json:"errors"`
	ErrorsTotal       int64            `json:"errors_total"`
	ConnectsAttempted int64            `json:"connects_attempted"`
	ConnectsOK        int64            `json:"connects_ok"`
	ConnectRatePerS   float64          `json:"connect_rate_per_s"`
	ConnectFailures   map[string]int64 `json:"connect_failures"`
	ConnectRetries    int64            `json:"connect_retries"`
	Reencoded         int64            `json:"reencoded_replies"`
	Cycles            int64            `json:"cycles,omitempty"`
	PeakLive          int64            `json:"peak_live"`
	LiveAtEndOfHold   int64            `json:"live_at_end_of_hold,omitempty"`
	CloseNotices      int64            `json:"close_notices"`
	Drained           int64            `json:"drained"`            // connections the relay closed with 1001 (shutting down), phones and binaries
	DrainedBinaries   int64            `json:"drained_binaries"`   // of which binaries
	DrainedUnanswered int64            `json:"drained_unanswered"` // messages drained phones had in flight
	CPUUserS          float64          `json:"cpu_user_s"`
	CPUSysS           float64          `json:"cpu_sys_s"`
	CPUPerRoundTripUS float64          `json:"cpu_us_per_round_trip"`
	Interrupted       bool             `json:"interrupted"`
	TimedOut          bool             `json:"timed_out"`
	WorkerFailures    int              `json:"worker_failures"`
	Flood             *FloodResult     `json:"flood,omitempty"` // --mode flood: latency_us, round_trips and sends are the calm pair's
}

// Summary condenses r for the result line.
func (r *Result) Summary() Summary {
	s := Summary{
		Mode: r.Mode, Addr: r.Addr, Procs: r.Procs, Phones: r.Phones, Binaries: r.Binaries,
		Inflight: r.Inflight, Size: r.Size, DurationS: round3(r.WindowS),
		RateTarget: r.RateTarget, Sends: r.Sends, RateAchieved: round3(r.RateAchievedPerS),
		RoundTrips: r.RoundTrips, ThroughputPerS: round3(r.ThroughputPerS),
		LatencyUS: percentiles(&r.Latency), ConnectUS: percentiles(&r.ConnectLatency),
		SendLagUS: percentiles(&r.SendLag), LatencyFromSendUS: percentiles(&r.LatencyFromSend),
		Errors: orEmpty(r.Errors), ErrorsTotal: sumKinds(r.Errors),
		ConnectsAttempted: r.ConnectsAttempted, ConnectsOK: r.ConnectsOK,
		ConnectRatePerS: round3(r.ConnectRatePerS), ConnectFailures: orEmpty(r.ConnectFailures),
		ConnectRetries: r.Retries, Reencoded: r.Reencoded,
		Cycles: r.Cycles, PeakLive: r.PeakLive, LiveAtEndOfHold: r.LiveAtEnd,
		CloseNotices: r.CloseNotices,
		Drained:      r.DrainedPhones + r.DrainedBinaries, DrainedBinaries: r.DrainedBinaries,
		DrainedUnanswered: r.Unanswered,
		CPUUserS:          round3(r.CPUUserS), CPUSysS: round3(r.CPUSysS),
		Interrupted: r.Interrupted, TimedOut: r.TimedOut, WorkerFailures: r.WorkerFailures,
		Flood: r.Flood,
	}
	if r.RoundTrips > 0 && r.Mode != modeIdle {
		s.CPUPerRoundTripUS = round3((r.CPUUserS + r.CPUSysS) * 1e6 / float64(r.RoundTrips))
	}
	return s
}

func orEmpty(m map[string]int64) map[string]int64 {
	if m == nil {
		return map[string]int64{}
	}
	return m
}

func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }

// writeReport prints the human table and the SWLOAD_RESULT line.
func writeReport(w io.Writer, r *Result) {
	s := r.Summary()
	if s.Flood != nil {
		writeFloodReport(w, s)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, f string, a ...any) { fmt.Fprintf(tw, "  %s\t"+f+"\n", append([]any{k}, a...)...) }
	fmt.Fprintf(tw, "swload %s against %s: %d phones on %d binaries, %d process(es)\n", s.Mode, s.Addr, s.Phones, s.Binaries, s.Procs)
	switch s.Mode {
	case modeIdle:
		row("hold", "%.2f s", s.DurationS)
		row("live at end of hold", "%d (peak %d)", s.LiveAtEndOfHold, s.PeakLive)
	case modeActive:
		if s.RateTarget > 0 {
			row("window", "%.2f s, open loop at %g/s, at most %d in flight per phone, %d-byte frames", s.DurationS, s.RateTarget, s.Inflight, s.Size)
			row("sends", "%d (%.1f/s achieved of %g/s target; replies %.1f/s)", s.Sends, s.RateAchieved, s.RateTarget, s.ThroughputPerS)
		} else {
			row("window", "%.2f s, %d in flight per phone, %d-byte frames", s.DurationS, s.Inflight, s.Size)
		}
	case modeChurn:
		row("window", "%.2f s, %d slots, %d-byte frames", s.DurationS, s.Phones, s.Size)
		row("cycles", "%d (%.1f/s)", s.Cycles, float64(s.Cycles)/max(s.DurationS, 1e-9))
	}
	row("connects", "%d ok of %d attempted, %.1f/s", s.ConnectsOK, s.ConnectsAttempted, s.ConnectRatePerS)
	row("connect failures", "%s", kindsText(s.ConnectFailures))
	if s.ConnectRetries > 0 {
		row("connect retries", "%d (phones refused 4404 and retried)", s.ConnectRetries)
	}
	row("connect latency", "%s", latText(s.ConnectUS))
	row("round trips", "%d (%.1f/s)", s.RoundTrips, s.ThroughputPerS)
	if s.RateTarget > 0 {
		row("round-trip latency", "%s  (from the scheduled send time)", latText(s.LatencyUS))
		row("send lag", "%s  (pacer lateness, included above)", latText(s.SendLagUS))
		row("from actual send", "%s  (uncorrected)", latText(s.LatencyFromSendUS))
	} else {
		row("round-trip latency", "%s", latText(s.LatencyUS))
	}
	row("errors", "%s", kindsText(s.Errors))
	if s.Reencoded > 0 {
		row("re-encoded replies", "%d (equal as JSON, not byte for byte)", s.Reencoded)
	}
	row("close notices", "%d", s.CloseNotices)
	if s.Drained > 0 {
		row("drained", "%d connections closed 1001 by the relay shutting down (%d phones, %d binaries; %d messages unanswered): a drain, not an error",
			s.Drained, s.Drained-s.DrainedBinaries, s.DrainedBinaries, s.DrainedUnanswered)
	}
	cpu := fmt.Sprintf("user %.2f s + sys %.2f s", s.CPUUserS, s.CPUSysS)
	if s.CPUPerRoundTripUS > 0 {
		cpu += fmt.Sprintf(" = %.1f µs per round trip", s.CPUPerRoundTripUS)
	}
	row("generator CPU", "%s (this process and its workers; subtract from a total to get the relay's)", cpu)
	switch {
	case s.Interrupted:
		row("ended", "interrupted")
	case s.TimedOut:
		row("ended", "hit --timeout")
	}
	if s.WorkerFailures > 0 {
		row("worker failures", "%d", s.WorkerFailures)
	}
	_ = tw.Flush()
	writeRateLimitHint(w, s.ConnectFailures)
	line, _ := json.Marshal(s)
	fmt.Fprintf(w, "%s%s\n", ResultPrefix, line)
}

func kindsText(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func latText(p Percentiles) string {
	if p.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %.0f µs  p99 %.0f µs  p99.9 %.0f µs  max %.0f µs  mean %.0f µs  (n=%d)",
		p.P50, p.P99, p.P999, p.Max, p.Mean, p.Count)
}

// progress is one progress sample: a worker sends it as a JSON line, the
// parent (or a single process) prints it on stderr.
type progress struct {
	Type       string `json:"type"`
	Phase      string `json:"phase"`
	Live       int64  `json:"live"`
	Attempts   int64  `json:"attempts"`
	ConnOK     int64  `json:"conn_ok"`
	RoundTrips int64  `json:"rt"`
	Sends      int64  `json:"sends"`
	Cycles     int64  `json:"cycles"`
	Errors     int64  `json:"errors"`
	ConnFail   int64  `json:"conn_fail"`
	Drained    int64  `json:"drained"`
}

func (p *progress) add(o progress) {
	p.Live += o.Live
	p.Attempts += o.Attempts
	p.ConnOK += o.ConnOK
	p.RoundTrips += o.RoundTrips
	p.Sends += o.Sends
	p.Cycles += o.Cycles
	p.Errors += o.Errors
	p.ConnFail += o.ConnFail
	p.Drained += o.Drained
}

// progressPrinter turns cumulative samples into the stderr line.
func newProgressPrinter(w io.Writer) *progressPrinter {
	now := time.Now()
	return &progressPrinter{w: w, start: now, last: now}
}

type progressPrinter struct {
	w         io.Writer
	start     time.Time
	last      time.Time
	lastRT    int64
	lastCy    int64
	lastSent  int64
	showSends bool // open loop: the send rate is the one asked for, show it
}

func (pp *progressPrinter) print(p progress) {
	now := time.Now()
	dt := now.Sub(pp.last).Seconds()
	rate := func(cur, prev int64) float64 {
		if dt <= 0 {
			return 0
		}
		return float64(cur-prev) / dt
	}
	fmt.Fprintf(pp.w, "swload %6.1fs %-7s live %d  connects %d/%d",
		now.Sub(pp.start).Seconds(), p.Phase, p.Live, p.ConnOK, p.Attempts)
	if pp.showSends {
		fmt.Fprintf(pp.w, "  sent/s %.0f", rate(p.Sends, pp.lastSent))
	}
	fmt.Fprintf(pp.w, "  rt/s %.0f  rt %d", rate(p.RoundTrips, pp.lastRT), p.RoundTrips)
	if p.Cycles > 0 {
		fmt.Fprintf(pp.w, "  cycles/s %.0f", rate(p.Cycles, pp.lastCy))
	}
	fmt.Fprintf(pp.w, "  errors %d  connect-failures %d", p.Errors, p.ConnFail)
	if p.Drained > 0 {
		fmt.Fprintf(pp.w, "  drained %d", p.Drained)
	}
	fmt.Fprintln(pp.w)
	pp.last, pp.lastRT, pp.lastCy, pp.lastSent = now, p.RoundTrips, p.Cycles, p.Sends
}

// writeFloodReport prints --mode flood's table and result line.
func writeFloodReport(w io.Writer, s Summary) {
	f := s.Flood
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, fm string, a ...any) { fmt.Fprintf(tw, "  %s\t"+fm+"\n", append([]any{k}, a...)...) }
	who := "binaries"
	if f.Scenario != scenBinariesToPhones {
		who = "phones"
	}
	fmt.Fprintf(tw, "swload flood %s against %s: %d flooding %s, %d receivers, %d-byte messages, %.2f s\n",
		f.Scenario, s.Addr, f.Flooders, who, f.Receivers, f.Size, s.DurationS)
	row("connects", "%d of %d flooders (and the calm pair)", s.ConnectsOK, s.ConnectsAttempted)
	row("connect failures", "%s", kindsText(s.ConnectFailures))
	row("flood sent", "%d messages, %s (%.1f MB/s offered)", f.Sent, mib(f.SentBytes), f.OfferedMBps)
	if f.Scenario == scenDeafBinary {
		row("flood delivered", "%d (the binary never reads)", f.Received)
	} else {
		row("flood delivered", "%d messages, %s (%.1f MB/s); undelivered at the end %d", f.Received, mib(f.ReceivedBytes), f.DeliveredMBps, f.Undelivered)
	}
	if f.CutAtEnd > 0 {
		row("cut at end", "%d writes still blocked when the drain ran out", f.CutAtEnd)
	}
	row("flooder disconnects", "%s", kindsText(f.FlooderDisconnects))
	row("receiver disconnects", "%s", kindsText(f.ReceiverDisconnects))
	if f.Redials > 0 {
		row("redials", "%d", f.Redials)
	}
	c := f.Calm
	row("calm pair", "%d replies of %d sent (every %g ms, %d B): p50 %.0f µs  p99 %.0f µs  max %.0f µs; lost %d, late (>1 s) %d",
		c.Replies, c.Sent, c.IntervalMS, c.Size, c.P50US, c.P99US, c.MaxUS, c.Lost, c.Late)
	if f.RSS.PID > 0 {
		row("relay RSS", "peak %s (at %+.1f s), window start %s, end %s, final %s; %d samples; cap %s",
			mib(f.RSS.PeakBytes), f.RSS.PeakAtS, mib(f.RSS.StartBytes), mib(f.RSS.EndBytes), mib(f.RSS.FinalBytes), f.RSS.Samples, mib(f.RSS.CapBytes))
	} else {
		row("relay RSS", "not sampled (no --relay-pid)")
	}
	if m := f.Metrics; m != nil {
		num := func(v int64, text string) string {
			if v < 0 {
				return "n/a"
			}
			return text
		}
		row("relay buffered", "peak %s (switchboard_buffered_bytes), paused sockets peak %s",
			num(m.BufferedBytesPeak, mib(m.BufferedBytesPeak)), num(m.ReadPausedPeak, fmt.Sprint(m.ReadPausedPeak)))
		row("relay read pauses", "%s %s", num(m.ReadPausesTotal, fmt.Sprint(m.ReadPausesTotal)), kindsText(m.ReadPauses))
		row("relay closes", "%s", kindsText(m.Closes))
		row("relay drops", "%s", kindsText(m.Drops))
		row("metrics samples", "%d (%d failed)", m.Samples, m.FetchErrors)
	}
	row("errors", "%s", kindsText(s.Errors))
	row("generator CPU", "user %.2f s + sys %.2f s", s.CPUUserS, s.CPUSysS)
	switch {
	case f.Aborted:
		row("ended", "ABORTED: relay RSS passed --max-rss %s, flooders stopped", mib(f.RSS.CapBytes))
	case s.Interrupted:
		row("ended", "interrupted")
	case s.TimedOut:
		row("ended", "hit --timeout")
	}
	_ = tw.Flush()
	writeRateLimitHint(w, s.ConnectFailures)
	line, _ := json.Marshal(s)
	fmt.Fprintf(w, "%s%s\n", ResultPrefix, line)
}
