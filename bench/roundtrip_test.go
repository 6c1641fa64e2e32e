package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"switchboard/loop"
)

const dialTimeout = 10 * time.Second

func startSwitchboard(b *testing.B) string {
	b.Helper()
	srv, err := loop.New(loop.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return ln.Addr().String()
}

func headers(serverID string, phone bool) http.Header {
	if phone {
		return http.Header{"X-Pyrycode-Server": {serverID}, "X-Pyrycode-Token": {"t"}, "User-Agent": {"bench"}}
	}
	return http.Header{"X-Pyrycode-Server": {serverID}, "X-Pyrycode-Version": {"2"}, "User-Agent": {"bench"}}
}

// echoBinary sends every envelope straight back: {"conn_id":…,"frame":…} is
// also a valid binary→phone envelope, so the binary does no parsing at all.
func echoBinary(c *Client) {
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

// BenchmarkRoundTripSwitchboard measures phone→binary→phone round trips, one
// in flight per phone, 256-byte frames. Allocations are the relay's: the
// clients allocate nothing per message.
func BenchmarkRoundTripSwitchboard(b *testing.B) {
	for _, phones := range []int{1, 64} {
		b.Run(fmt.Sprintf("phones=%d", phones), func(b *testing.B) {
			benchRoundTrip(b, startSwitchboard(b), phones, 16)
		})
	}
}

func benchRoundTrip(b *testing.B, addr string, phones, perServer int) {
	frame := []byte(`{"pad":"` + string(make([]byte, 0)) + fmt.Sprintf("%0*d", 256-10, 0) + `"}`)
	var clients []*Client
	for i := 0; i < (phones+perServer-1)/perServer; i++ {
		id := fmt.Sprintf("bench-%d", i)
		bc, err := Dial(addr, "/v1/server", headers(id, false), nil, dialTimeout)
		if err != nil {
			b.Fatal(err)
		}
		clients = append(clients, bc)
		go echoBinary(bc)
		for j := 0; j < perServer && len(clients)-i-1 < phones; j++ {
			pc, err := Dial(addr, "/v1/client", headers(id, true), nil, dialTimeout)
			if err != nil {
				b.Fatal(err)
			}
			clients = append(clients, pc)
		}
	}
	var phoneClients []*Client
	for _, c := range clients {
		_ = c
	}
	// Phones are every client that is not a binary; rebuild the list in order.
	phoneClients = phoneClients[:0]
	idx := 0
	for i := 0; i < (phones+perServer-1)/perServer; i++ {
		idx++ // binary
		for j := 0; j < perServer && len(phoneClients) < phones; j++ {
			phoneClients = append(phoneClients, clients[idx])
			idx++
		}
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	// Warm up: one round trip each.
	for _, p := range phoneClients {
		if err := p.WriteText(frame); err != nil {
			b.Fatal(err)
		}
		if _, _, err := p.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([][]time.Duration, len(phoneClients))
	per := b.N/len(phoneClients) + 1
	for i := range lat {
		lat[i] = make([]time.Duration, 0, per)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, p := range phoneClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < per; n++ {
				t0 := time.Now()
				if err := p.WriteText(frame); err != nil {
					b.Error(err)
					return
				}
				if _, _, err := p.ReadFrame(); err != nil {
					b.Error(err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	}
	b.ReportMetric(float64(len(all))/b.Elapsed().Seconds(), "roundtrips/s")
}
