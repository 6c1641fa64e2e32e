package loop

import (
	"strconv"
	"sync/atomic"
	"time"
)

// maxHistBounds bounds a histogram's finite buckets: the counts are a fixed
// array, so an observation indexes straight into it.
const maxHistBounds = 20

// histogram is a Prometheus histogram with fixed buckets whose observations
// are lock-free: one atomic add to the bucket and one to the sum. Why not a
// library's: VictoriaMetrics' PrometheusHistogram takes a mutex per
// update, and the outbox writers of every connection observe into one
// histogram from every core at once; a mutex there would be the one lock
// all writers share. Counts are per bucket and made cumulative when
// written, so a scrape racing observations still sees buckets that never
// decrease and a _count equal to the +Inf bucket.
//
// Its bounds are not in it: they are a package variable per measurement
// (latency.go) passed to every call, so the zero histogram in Counters is
// ready to use and the hot path reads no slice header from a shared line.
type histogram struct {
	counts [maxHistBounds + 1]atomic.Uint64 // counts[i]: observations in (bounds[i-1], bounds[i]]; the last: above every bound
	sumNs  atomic.Uint64
}

// histBounds are a histogram's upper bounds (le) in ns, ascending.
type histBounds []int64

// newHistBounds converts bucket bounds to the ns the hot path compares
// against; more than maxHistBounds is a programming error.
func newHistBounds(bounds ...time.Duration) histBounds {
	if len(bounds) > maxHistBounds {
		panic("loop: histogram has more than maxHistBounds buckets")
	}
	ns := make(histBounds, len(bounds))
	for i, b := range bounds {
		if i > 0 && b <= bounds[i-1] {
			panic("loop: histogram bounds not ascending")
		}
		ns[i] = int64(b)
	}
	return ns
}

// bucket is the index of the bucket that ns falls in. A linear scan: with
// 20 bounds and most observations in the first few, it beats a binary
// search.
func (b histBounds) bucket(ns int64) int {
	i := 0
	for i < len(b) && ns > b[i] {
		i++
	}
	return i
}

// observe records one observation of ns nanoseconds.
func (h *histogram) observe(b histBounds, ns int64) {
	ns = max(ns, 0)
	h.counts[b.bucket(ns)].Add(1)
	h.sumNs.Add(uint64(ns))
}

// write appends the histogram's series with the given labels ("" for none)
// under the family m.family last named.
func (m *metricWriter) histogram(labels string, b histBounds, h *histogram) {
	var cum uint64
	for i := range len(b) + 1 {
		cum += h.counts[i].Load()
		m.b = append(m.b, m.name...)
		m.b = append(m.b, `_bucket{`...)
		if labels != "" {
			m.b = append(m.b, labels...)
			m.b = append(m.b, ',')
		}
		m.b = append(m.b, `le="`...)
		if i < len(b) {
			m.b = strconv.AppendFloat(m.b, time.Duration(b[i]).Seconds(), 'g', -1, 64)
		} else {
			m.b = append(m.b, "+Inf"...)
		}
		m.b = append(m.b, `"} `...)
		m.b = strconv.AppendUint(m.b, cum, 10)
		m.b = append(m.b, '\n')
	}
	m.suffixed("_sum", labels)
	m.b = strconv.AppendFloat(m.b, time.Duration(h.sumNs.Load()).Seconds(), 'g', -1, 64)
	m.b = append(m.b, '\n')
	m.suffixed("_count", labels)
	m.b = strconv.AppendUint(m.b, cum, 10)
	m.b = append(m.b, '\n')
}

// suffixed starts a sample line for name+suffix{labels}, up to its value.
func (m *metricWriter) suffixed(suffix, labels string) {
	m.b = append(m.b, m.name...)
	m.b = append(m.b, suffix...)
	if labels != "" {
		m.b = append(m.b, '{')
		m.b = append(m.b, labels...)
		m.b = append(m.b, '}')
	}
	m.b = append(m.b, ' ')
}

// addBucket and addSum record observations counted by the caller: a writer
// tallies a whole flush and adds once per bucket it touched.
func (h *histogram) addBucket(i int, n uint64) { h.counts[i].Add(n) }
func (h *histogram) addSum(ns int64)           { h.sumNs.Add(uint64(max(ns, 0))) }
