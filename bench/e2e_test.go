package bench

import (
	"flag"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"switchboard/internal/wsclient"
)

var (
	flagActivePhones = flag.Int("phones", 1024, "active phones in BenchmarkRelay")
	flagRelayCPUs    = flag.String("relay-cpus", "", "pin each relay process to these CPUs (a taskset -c list, e.g. 0 or 0-7); pin the benchmark itself to others with taskset -c around go test. Empty: not pinned")
	flagIdlePhones   = flag.Int("idle", 4000, "idle phones added in BenchmarkIdle (each relay-side connection is one fd: keep phones+phones/16 under ~18,000)")
)

const (
	phonesPerBinary = 16
	frameSize       = 256
	dialTimeout     = 10 * time.Second
)

func headers(serverID string, phone bool) http.Header {
	if phone {
		return http.Header{"X-Pyrycode-Server": {serverID}, "X-Pyrycode-Token": {"t"}, "User-Agent": {"bench"}}
	}
	return http.Header{"X-Pyrycode-Server": {serverID}, "X-Pyrycode-Version": {"2"}, "User-Agent": {"bench"}}
}

// benchFrame is a 256-byte JSON phone frame.
var benchFrame = func() []byte {
	f := []byte(`{"pad":"`)
	for len(f) < frameSize-2 {
		f = append(f, 'x')
	}
	return append(f, `"}`...)
}()

// echoBinary sends every envelope straight back: {"conn_id":…,"frame":…} is
// also a valid binary→phone envelope, so the binary does no parsing at all.
func echoBinary(c *wsclient.Client) {
	for {
		_, p, err := c.ReadFrame()
		if err != nil {
			return
		}
		if c.WriteText(p) != nil {
			return
		}
	}
}

// fleet is binaries with their phones, all connected to one relay.
type fleet struct {
	binaries, phones []*wsclient.Client
	src              wsclient.Spread // large runs would exhaust one source address's ports
}

func (f *fleet) dial(addr, path string, h http.Header) (*wsclient.Client, error) {
	return wsclient.Dial(addr, wsclient.Options{Timeout: dialTimeout, Local: f.src.Next()}, wsclient.Request{Path: path, Header: h})
}

// grow adds phones (and binaries for them, 16 phones each); every new phone
// sends one frame and waits for its echo, so the relay has seen traffic on
// every connection before anything is measured.
func (f *fleet) grow(tb testing.TB, addr string, phones int) {
	tb.Helper()
	first := len(f.binaries)
	nb := (phones + phonesPerBinary - 1) / phonesPerBinary
	newPhones := make([]*wsclient.Client, phones)
	var wg sync.WaitGroup
	var failed atomic.Value
	work := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for bi := range work {
				id := fmt.Sprintf("bench-%d", first+bi)
				bc, err := f.dial(addr, "/v1/server", headers(id, false))
				if err != nil {
					failed.Store(err)
					continue
				}
				go echoBinary(bc)
				for j := bi * phonesPerBinary; j < min((bi+1)*phonesPerBinary, phones); j++ {
					pc, err := f.dial(addr, "/v1/client", headers(id, true))
					if err == nil {
						err = pc.WriteText(benchFrame)
					}
					if err == nil {
						_, _, err = pc.ReadFrame()
					}
					if err != nil {
						failed.Store(err)
						break
					}
					newPhones[j] = pc
				}
				f.add(bc, nil)
			}
		}()
	}
	for bi := 0; bi < nb; bi++ {
		work <- bi
	}
	close(work)
	wg.Wait()
	f.add(nil, newPhones)
	if err, _ := failed.Load().(error); err != nil {
		tb.Fatalf("connecting: %v", err)
	}
}

var fleetMu sync.Mutex

func (f *fleet) add(b *wsclient.Client, phones []*wsclient.Client) {
	fleetMu.Lock()
	defer fleetMu.Unlock()
	if b != nil {
		f.binaries = append(f.binaries, b)
	}
	for _, p := range phones {
		if p != nil {
			f.phones = append(f.phones, p)
		}
	}
}

func (f *fleet) conns() int { return len(f.binaries) + len(f.phones) }

func (f *fleet) close() {
	for _, c := range slices.Concat(f.binaries, f.phones) {
		c.Close()
	}
}

// BenchmarkRelay runs phone→binary→phone round trips with 256-byte frames
// against each relay in its own process, with 1 and 16 messages in flight
// per phone. One op is one round trip. relay-cpu-µs/rt is the relay
// process's own CPU time per round trip (user+system), the fair comparison
// on a machine where the clients compete for the same cores.
func BenchmarkRelay(b *testing.B) {
	for _, impl := range relayImpls {
		for _, inflight := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/inflight=%d", impl, inflight), func(b *testing.B) {
				p := startRelayProc(b, impl)
				var f fleet
				f.grow(b, p.addr, *flagActivePhones)
				defer f.close()
				runRoundTrips(b, p, f.phones, inflight)
			})
		}
	}
}

func runRoundTrips(b *testing.B, p *relayProc, phones []*wsclient.Client, inflight int) {
	per := max(1, b.N/len(phones))
	lat := make([][]time.Duration, len(phones))
	for i := range lat {
		lat[i] = make([]time.Duration, 0, per)
	}
	warmUp(b, phones, inflight)
	m0, cpu0 := p.mem(b), p.cpu(b)
	fl0, fr0 := p.metric(b, "switchboard_flushes_total"), p.metric(b, "switchboard_frames_flushed_total")
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, pc := range phones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent := make([]time.Time, inflight) // replies are FIFO per phone
			n := min(inflight, per)
			for k := 0; k < n; k++ {
				sent[k] = time.Now()
				if err := pc.WriteText(benchFrame); err != nil {
					b.Error(err)
					return
				}
			}
			for k := 0; k < per; k++ {
				if _, payload, err := pc.ReadFrame(); err != nil || len(payload) != frameSize {
					b.Errorf("reply %d: %v (%d bytes)", k, err, len(payload))
					return
				}
				lat[i] = append(lat[i], time.Since(sent[k%inflight]))
				if n < per {
					sent[n%inflight] = time.Now()
					if err := pc.WriteText(benchFrame); err != nil {
						b.Error(err)
						return
					}
					n++
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	cpu1 := p.cpu(b)
	m1 := p.mem(b)
	all := slices.Concat(lat...)
	slices.Sort(all)
	rts := float64(len(all))
	b.ReportMetric(rts/b.Elapsed().Seconds(), "rt/s")
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/rts, "relay-cpu-µs/rt")
	b.ReportMetric(float64(m1.mallocs-m0.mallocs-2)/rts, "relay-allocs/rt") // -2: the two profile requests' own... roughly
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(p.goroutines(b)), "relay-goroutines")
	if fl0 >= 0 {
		fl1, fr1 := p.metric(b, "switchboard_flushes_total"), p.metric(b, "switchboard_frames_flushed_total")
		b.ReportMetric((fr1-fr0)/max(fl1-fl0, 1), "frames/flush")
	}
}

// warmUp has every phone complete one full window of round trips before the
// timed section, so the relay's buffer pools already hold what inflight
// frames per phone need: the allocations reported are steady state, not the
// pools filling (which at 16 in flight is ~16,000 frame buffers at once).
func warmUp(b *testing.B, phones []*wsclient.Client, inflight int) {
	var wg sync.WaitGroup
	for _, pc := range phones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range inflight {
				if err := pc.WriteText(benchFrame); err != nil {
					b.Error(err)
					return
				}
			}
			for range inflight {
				if _, _, err := pc.ReadFrame(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkIdle measures what an idle connection costs each relay: the
// slope of heap+stack in use (after a forced GC) and of RSS between a small
// and a large fleet of phones that have each sent one frame. Run it once:
// -benchtime=1x.
func BenchmarkIdle(b *testing.B) {
	for _, impl := range relayImpls {
		b.Run(impl, func(b *testing.B) {
			p := startRelayProc(b, impl)
			var f fleet
			defer f.close()
			f.grow(b, p.addr, 512)
			c0, m0, r0, g0 := f.conns(), p.mem(b), p.rss(b), p.goroutines(b)
			p.saveHeapProfile(b, impl, "small")
			f.grow(b, p.addr, *flagIdlePhones)
			c1, m1, r1, g1 := f.conns(), p.mem(b), p.rss(b), p.goroutines(b)
			p.saveHeapProfile(b, impl, "large")
			for range b.N {
			}
			dc := float64(c1 - c0)
			b.ReportMetric(float64(m1.user()-m0.user())/dc, "user-B/conn")
			b.ReportMetric(float64(r1-r0)/dc, "rss-B/conn")
			b.ReportMetric(float64(g1-g0)/dc, "goroutines/conn")
			b.ReportMetric(float64(g1), "relay-goroutines")
			b.ReportMetric(float64(c1), "conns")
		})
	}
}
