package main

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"sync/atomic"
	"time"
)

// Latencies are kept in a fixed log-bucket histogram of nanoseconds:
// values below 2*histSub are exact, every power of two above is split into
// histSub linear buckets (relative error under 1/histSub, ~1.6%). The bucket
// layout is a constant, so histograms from different processes merge
// exactly by adding counts, and memory is bounded whatever the sample count.
const (
	histSubBits = 6
	histSub     = 1 << histSubBits // buckets per power of two
	histMaxBits = 40               // 2^40 ns ≈ 18 min; larger values land in the last bucket
	histBuckets = 2*histSub + (histMaxBits-histSubBits-1)*histSub
)

// bucketOf maps a value in nanoseconds to its bucket.
func bucketOf(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	l := bits.Len64(v)
	if l > histMaxBits {
		return histBuckets - 1
	}
	shift := l - histSubBits - 1
	m := int(v >> uint(shift)) // in [histSub, 2*histSub)
	return 2*histSub + (shift-1)*histSub + (m - histSub)
}

// bucketRange returns the smallest and largest value bucket i holds.
func bucketRange(i int) (lo, hi uint64) {
	if i < 2*histSub {
		return uint64(i), uint64(i)
	}
	shift := uint((i-2*histSub)/histSub + 1)
	m := uint64((i-2*histSub)%histSub + histSub)
	return m << shift, (m+1)<<shift - 1
}

// Histogram is a mergeable snapshot. The zero value is empty.
type Histogram struct {
	Counts []uint64 // len histBuckets, or nil when empty
	N      uint64
	Sum    uint64 // ns
	Min    uint64 // ns, valid when N > 0
	Max    uint64 // ns
}

// Record adds one sample (used by tests and single-threaded callers).
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	if h.Counts == nil {
		h.Counts = make([]uint64, histBuckets)
	}
	h.Counts[bucketOf(v)]++
	if h.N == 0 || v < h.Min {
		h.Min = v
	}
	h.Max = max(h.Max, v)
	h.N++
	h.Sum += v
}

// Merge adds o's samples to h; the result is exactly what recording both
// sample sets into one histogram would give.
func (h *Histogram) Merge(o *Histogram) {
	if o.N == 0 {
		return
	}
	if h.Counts == nil {
		h.Counts = make([]uint64, histBuckets)
	}
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
	if h.N == 0 || o.Min < h.Min {
		h.Min = o.Min
	}
	h.Max = max(h.Max, o.Max)
	h.N += o.N
	h.Sum += o.Sum
}

// Quantile returns the value at quantile q (0..1): the midpoint of the
// bucket holding the sample of rank ceil(q*N), clamped to the exact min/max.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.N == 0 {
		return 0
	}
	rank := uint64(q*float64(h.N) + 0.999999)
	rank = min(max(rank, 1), h.N)
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketRange(i)
			v := lo + (hi-lo)/2
			return time.Duration(min(max(v, h.Min), h.Max))
		}
	}
	return time.Duration(h.Max)
}

// Mean returns the exact mean.
func (h *Histogram) Mean() time.Duration {
	if h.N == 0 {
		return 0
	}
	return time.Duration(h.Sum / h.N)
}

// histJSON is the wire form between workers and the parent: only non-empty
// buckets, as [index, count] pairs.
type histJSON struct {
	N       uint64      `json:"n"`
	Sum     uint64      `json:"sum_ns"`
	Min     uint64      `json:"min_ns"`
	Max     uint64      `json:"max_ns"`
	Buckets [][2]uint64 `json:"buckets"`
}

// MarshalJSON writes the sparse form.
func (h Histogram) MarshalJSON() ([]byte, error) {
	j := histJSON{N: h.N, Sum: h.Sum, Min: h.Min, Max: h.Max, Buckets: [][2]uint64{}}
	for i, c := range h.Counts {
		if c != 0 {
			j.Buckets = append(j.Buckets, [2]uint64{uint64(i), c})
		}
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the sparse form.
func (h *Histogram) UnmarshalJSON(b []byte) error {
	var j histJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*h = Histogram{N: j.N, Sum: j.Sum, Min: j.Min, Max: j.Max}
	if len(j.Buckets) == 0 {
		return nil
	}
	h.Counts = make([]uint64, histBuckets)
	var n uint64
	for _, p := range j.Buckets {
		if p[0] >= histBuckets {
			return fmt.Errorf("histogram bucket %d out of range", p[0])
		}
		h.Counts[p[0]] += p[1]
		n += p[1]
	}
	if n != h.N {
		return fmt.Errorf("histogram counts sum to %d, header says %d", n, h.N)
	}
	return nil
}

// recorder is a histogram many goroutines record into: a few shards of
// atomic counters (picked by a caller-supplied key, e.g. the phone id) keep
// cache-line contention low without a histogram per phone.
type recorder struct {
	shards []atomicHist
}

type atomicHist struct {
	n, sum   atomic.Uint64
	min, max atomic.Uint64 // min stored as ^v so zero means "none yet"
	counts   [histBuckets]atomic.Uint64
}

func newRecorder(shards int) *recorder {
	return &recorder{shards: make([]atomicHist, max(shards, 1))}
}

func (r *recorder) record(key int64, d time.Duration) {
	h := &r.shards[uint64(key)%uint64(len(r.shards))]
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for inv := ^v; ; {
		cur := h.min.Load()
		if cur >= inv || h.min.CompareAndSwap(cur, inv) {
			break
		}
	}
	for {
		cur := h.max.Load()
		if cur >= v || h.max.CompareAndSwap(cur, v) {
			break
		}
	}
}

// snapshot merges the shards into one Histogram. Concurrent records may be
// partly included; call it after recording stops for exact totals.
func (r *recorder) snapshot() Histogram {
	var out Histogram
	for i := range r.shards {
		s := &r.shards[i]
		n := s.n.Load()
		if n == 0 {
			continue
		}
		part := Histogram{Counts: make([]uint64, histBuckets), Min: ^s.min.Load(), Max: s.max.Load(), Sum: s.sum.Load()}
		for j := range s.counts {
			c := s.counts[j].Load()
			part.Counts[j] = c
			part.N += c
		}
		out.Merge(&part)
	}
	return out
}
