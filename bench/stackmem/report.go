package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// productionSockets is a phone's kernel sockets on a production box with
// HAProxy and the relay reaching each other over TCP: the phone-facing
// socket, HAProxy's to the node, and the node's. On loopback swload's end
// is a fourth.
const productionSockets = 3

const totalRow = "total per phone (HAProxy+kernel+relay RSS)"

// minCacheShown hides slab caches that moved less than this many bytes per
// socket: noise from the rest of the box.
const minCacheShown = 8

// figures is one run's per-connection numbers, in bytes.
type figures struct {
	HAProxy        float64 `json:"haproxy_rss_per_conn"`
	RelayRSS       float64 `json:"relay_rss_per_conn"`
	RelayUser      float64 `json:"relay_user_per_conn"`
	SlabPerSocket  float64 `json:"kernel_meminfo_slab_per_socket"`
	SlabPerConn    float64 `json:"kernel_slab_per_conn_loopback"`
	SUnrPerConn    float64 `json:"kernel_sunreclaim_per_conn_loopback"`
	TCPSocket      float64 `json:"kernel_per_tcp_socket"`
	UnixSocket     float64 `json:"kernel_per_unix_socket,omitempty"`
	KernelPerPhone float64 `json:"kernel_per_phone"` // production: 3 TCP sockets, or 1 TCP + a unix pair
	TotalPerPhone  float64 `json:"total_per_phone"`  // HAProxy + kernel + relay RSS
	SocketsPerConn float64 `json:"sockets_per_conn"`
	Caches         map[string]float64
}

func derive(c config, s sample) figures {
	n := float64(s.Conns)
	f := figures{
		HAProxy:        float64(s.HAProxyRSS) / n,
		RelayRSS:       float64(s.RelayRSS) / n,
		RelayUser:      float64(s.RelayUser) / n,
		SlabPerConn:    float64(s.Slab) / n,
		SUnrPerConn:    float64(s.SUnreclaim) / n,
		SocketsPerConn: float64(s.SocketsAdded) / n,
		Caches:         map[string]float64{},
	}
	// What only TCP or only unix sockets allocate is theirs; the rest
	// (inode, dentry, file, epoll item, kmalloc) is split evenly over every
	// socket added.
	sockets := float64(max(s.SocketsAdded, 1))
	shared := float64(s.SocketSlab-s.TCPSpecific-s.UnixSpecific) / sockets
	f.SlabPerSocket = float64(s.Slab) / sockets
	f.TCPSocket = shared + float64(s.TCPSpecific)/float64(max(s.TCPAdded, 1))
	f.KernelPerPhone = productionSockets * f.TCPSocket
	if unixAdded := s.SocketsAdded - s.TCPAdded; c.unix && unixAdded > 0 {
		f.UnixSocket = shared + float64(s.UnixSpecific)/float64(unixAdded)
		f.KernelPerPhone = f.TCPSocket + 2*f.UnixSocket
	}
	f.TotalPerPhone = f.HAProxy + f.KernelPerPhone + f.RelayRSS
	for name, d := range s.Caches {
		f.Caches[name] = float64(d) / sockets
	}
	return f
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// row is one line of the table: its name and a figure from each run.
// A kernel row's median is over the runs whose kernel figures are clean
// (no other process's sockets came and went), or over all when none is.
type row struct {
	name   string
	get    func(figures) float64
	kernel bool
}

func report(w io.Writer, c config, tlsLib string, samples []sample) {
	figs := make([]figures, len(samples))
	var clean []int
	for i, s := range samples {
		figs[i] = derive(c, s)
		if s.KernelClean {
			clean = append(clean, i)
		}
	}
	if len(clean) == 0 {
		for i := range samples {
			clean = append(clean, i)
		}
		fmt.Fprintf(w, "WARNING: no run's kernel figures are clean (other sockets came and went): they are noise, rerun on a quiet box\n")
	}
	rows := []row{
		{"HAProxy RSS per connection", func(f figures) float64 { return f.HAProxy }, false},
		{"kernel per TCP socket (socket caches)", func(f figures) float64 { return f.TCPSocket }, true},
	}
	if c.unix {
		rows = append(rows, row{"kernel per unix socket (socket caches)", func(f figures) float64 { return f.UnixSocket }, true})
	}
	kname := "kernel per phone (3 TCP sockets)"
	if c.unix {
		kname = "kernel per phone (1 TCP + unix pair)"
	}
	rows = append(rows,
		row{kname, func(f figures) float64 { return f.KernelPerPhone }, true},
		row{"relay RSS per connection", func(f figures) float64 { return f.RelayRSS }, false},
		row{"relay user memory per conn", func(f figures) float64 { return f.RelayUser }, false},
		row{totalRow, func(f figures) float64 { return f.TotalPerPhone }, true},
		row{"meminfo Slab per socket (all caches)", func(f figures) float64 { return f.SlabPerSocket }, true},
		row{"loopback slab per connection", func(f figures) float64 { return f.SlabPerConn }, true},
		row{"loopback SUnreclaim per connection", func(f figures) float64 { return f.SUnrPerConn }, true},
		row{"sockets added per connection", func(f figures) float64 { return f.SocketsPerConn }, true},
	)
	fmt.Fprintf(w, "stackmem: %d phones + %d binaries = %d connections, %s; HAProxy %s\n",
		c.phones, c.conns()-c.phones, c.conns(), modeName(c), tlsLib)
	if len(c.global) > 0 {
		fmt.Fprintf(w, "HAProxy global additions: %s\n", strings.Join(c.global, "; "))
	}
	fmt.Fprintf(w, "kernel medians over %d of %d runs\n", len(clean), len(samples))
	fmt.Fprintf(w, "%-44s %10s", "bytes", "median")
	for i := range figs {
		fmt.Fprintf(w, " %9s", fmt.Sprintf("run%d", i+1))
	}
	fmt.Fprintln(w)
	med := map[string]float64{}
	for _, r := range rows {
		v := make([]float64, len(figs))
		var m []float64
		for i, f := range figs {
			v[i] = r.get(f)
		}
		if r.kernel {
			for _, i := range clean {
				m = append(m, v[i])
			}
		} else {
			m = v
		}
		med[r.name] = median(m)
		if r.name == totalRow {
			// The sum of the parts' medians, not the median of sums over
			// a different set of runs.
			med[r.name] = med[rows[0].name] + med[kname] + med["relay RSS per connection"]
		}
		fmt.Fprintf(w, "%-44s %10.0f", r.name, med[r.name])
		for _, x := range v {
			fmt.Fprintf(w, " %9.0f", x)
		}
		fmt.Fprintln(w)
	}
	// Slab caches per socket added, largest first.
	names := map[string]bool{}
	for _, f := range figs {
		for n := range f.Caches {
			names[n] = true
		}
	}
	caches := map[string]float64{}
	for n := range names {
		var v []float64
		for _, i := range clean {
			v = append(v, figs[i].Caches[n])
		}
		if m := median(v); m >= minCacheShown || m <= -minCacheShown {
			caches[n] = m
		}
	}
	order := make([]string, 0, len(caches))
	for n := range caches {
		order = append(order, n)
	}
	sort.Slice(order, func(i, j int) bool { return caches[order[i]] > caches[order[j]] })
	fmt.Fprintf(w, "slab caches per socket added (median, active objects x object size):")
	for _, n := range order {
		fmt.Fprintf(w, " %s %.0f", n, caches[n])
	}
	fmt.Fprintln(w)
	for i, s := range samples {
		if s.LargeRoundTrip >= 0 {
			fmt.Fprintf(w, "run%d: %d-byte messages through HAProxy both ways: %d round trips, all verified\n", i+1, largeSize, s.LargeRoundTrip)
		}
	}
	out := struct {
		Phones     int                `json:"phones"`
		Conns      int                `json:"conns"`
		Unix       bool               `json:"unix"`
		Global     []string           `json:"haproxy_global"`
		TLS        string             `json:"haproxy_tls"`
		Median     figures            `json:"median"`
		Caches     map[string]float64 `json:"slab_caches_per_socket"`
		Runs       []figures          `json:"runs"`
		RawSamples []sample           `json:"samples"`
	}{c.phones, c.conns(), c.unix, c.global, tlsLib, figures{
		HAProxy: med[rows[0].name], TCPSocket: med[rows[1].name], UnixSocket: medOf(figs, clean, func(f figures) float64 { return f.UnixSocket }),
		KernelPerPhone: med[kname], RelayRSS: med["relay RSS per connection"], RelayUser: med["relay user memory per conn"],
		TotalPerPhone: med[totalRow], SlabPerConn: med["loopback slab per connection"],
		SUnrPerConn: med["loopback SUnreclaim per connection"], SlabPerSocket: med["meminfo Slab per socket (all caches)"], SocketsPerConn: med["sockets added per connection"],
	}, caches, figs, samples}
	for i := range out.Runs {
		out.Runs[i].Caches = nil
	}
	b, _ := json.Marshal(out)
	fmt.Fprintf(w, "STACKMEM_RESULT %s\n", b)
}

func medOf(figs []figures, clean []int, get func(figures) float64) float64 {
	var v []float64
	for _, i := range clean {
		v = append(v, get(figs[i]))
	}
	return median(v)
}
