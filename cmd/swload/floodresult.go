package main

import "fmt"

// What --mode flood reports, and when that fails the command.

// FloodResult is what --mode flood adds to a Result. The calm pair's round
// trips are the Result's latency histogram and round trips.
type FloodResult struct {
	Scenario  string `json:"scenario"`
	Flooders  int    `json:"flooders"`
	Receivers int    `json:"receivers"` // reading phones (binaries-to-phones), reading binaries (phones-to-binary), deaf binaries
	Size      int    `json:"size"`

	Sent          int64   `json:"sent"` // flood messages written whole
	SentBytes     int64   `json:"sent_bytes"`
	OfferedMBps   float64 `json:"offered_mb_per_s"` // sent bytes per second of window, 10^6 bytes
	Received      int64   `json:"received"`         // flood messages the receivers read (verified)
	ReceivedBytes int64   `json:"received_bytes"`   // their inner frames' bytes
	DeliveredMBps float64 `json:"delivered_mb_per_s"`
	// Undelivered is sent minus received once the flooders stopped and the
	// receivers caught up (up to --drain); not counted for deaf-binary.
	Undelivered int64 `json:"undelivered"`
	// CutAtEnd: flood writes still blocked when the drain ran out (the
	// relay was not reading that sender at all).
	CutAtEnd int64 `json:"cut_at_end"`

	FlooderDisconnects  map[string]int64 `json:"flooder_disconnects"`  // close_<code> or a socket error kind
	ReceiverDisconnects map[string]int64 `json:"receiver_disconnects"` // the same for the reading side
	Redials             int64            `json:"redials"`              // phone flooders that dialled again after a disconnect

	Calm    CalmSummary    `json:"calm"`
	RSS     RSSSummary     `json:"rss"`
	Metrics *MetricSummary `json:"metrics,omitempty"`

	// Aborted: the relay's RSS passed --max-rss and the flooders were stopped.
	Aborted bool `json:"aborted"`
}

// CalmSummary is the calm pair beside the flood.
type CalmSummary struct {
	IntervalMS float64 `json:"interval_ms"`
	Size       int     `json:"size"`
	Sent       int64   `json:"sent"`
	Replies    int64   `json:"count"`
	P50US      float64 `json:"p50_us"`
	P99US      float64 `json:"p99_us"`
	MaxUS      float64 `json:"max_us"`
	Lost       int64   `json:"lost"` // no reply by the end of the drain
	Late       int64   `json:"late"` // replied after more than 1 s
}

// RSSSummary is the relay process's resident set, sampled every 100 ms.
type RSSSummary struct {
	PID        int     `json:"pid"` // 0: not sampled (no --relay-pid)
	Samples    int64   `json:"samples"`
	PeakBytes  int64   `json:"peak_bytes"`
	StartBytes int64   `json:"window_start_bytes"`
	EndBytes   int64   `json:"window_end_bytes"`
	FinalBytes int64   `json:"final_bytes"`
	CapBytes   int64   `json:"cap_bytes"`
	ReadErrors int64   `json:"read_errors"`
	PeakAtS    float64 `json:"peak_at_s"` // seconds into the window (negative: before it)
}

// MetricSummary is what the relay's /metrics said (--metrics-url).
type MetricSummary struct {
	Samples           int64            `json:"samples"`
	FetchErrors       int64            `json:"fetch_errors"`
	BufferedBytesPeak int64            `json:"buffered_bytes_peak"` // -1: the relay exports no switchboard_buffered_bytes
	ReadPausedPeak    int64            `json:"read_paused_peak"`    // -1: not exported
	ReadPausesTotal   int64            `json:"read_pauses_total"`   // at the end; -1: not exported
	ReadPauses        map[string]int64 `json:"read_pauses"`         // by reason, non-zero only
	Closes            map[string]int64 `json:"closes"`              // switchboard_closes_total by reason, non-zero only
	Drops             map[string]int64 `json:"drops"`               // switchboard_drops_total by reason, non-zero only
}

// Failed reports a flood run that should fail the command: the --max-rss
// cap was hit, a calm message was lost, or, where every peer is honest
// (all but deaf-binary), a peer was disconnected or a flood message did not
// arrive.
func (fr *FloodResult) Failed() bool {
	if fr.Aborted || fr.Calm.Lost > 0 {
		return true
	}
	if fr.Scenario == scenDeafBinary {
		return false
	}
	return sumKinds(fr.FlooderDisconnects)+sumKinds(fr.ReceiverDisconnects) > 0 || fr.Undelivered > 0
}

// mib writes a byte count in MiB, for the flood's progress line and report.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
