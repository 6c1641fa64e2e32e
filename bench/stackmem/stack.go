package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"switchboard/internal/haproxycfg"
	"switchboard/internal/kmem"
)

const (
	// startWait bounds how long the relay and HAProxy take to serve.
	startWait = 20 * time.Second
	// warmups is how many TLS requests go through HAProxy before the
	// baseline, so that what the first handshakes allocate once (per
	// thread contexts, pools' first chunks) is not charged to the phones.
	warmups = 32
	// settleSamples consecutive equal readings, settleEvery apart, count
	// as settled: the connections are up and nothing is still growing.
	settleSamples = 3
	settleEvery   = 500 * time.Millisecond
	// settleMax bounds the wait for that.
	settleMax = 20 * time.Second
	// holdFor is swload's --hold: far longer than any measurement, which
	// ends it with SIGINT.
	holdFor = 30 * time.Minute
	// largeSize is the large-message check's frame: the relay's default
	// --max-message-bytes (256 KiB) less room for the envelope the
	// binary's echo wraps it in, which must fit the same limit.
	largeSize = 256<<10 - 1024
	// hapFDsPerConn: HAProxy holds the client and the server socket of
	// every connection; it sizes its open-file limit to about 2×maxconn.
	hapFDsPerConn = 2
	// fdLimit is the machine's hard limit on one process's open files.
	fdLimit = 20000
	// maxconnSlack covers the warm-up requests, health checks and the
	// large-message check beside the idle connections.
	maxconnSlack = 200
)

// stack is one measurement's processes and addresses.
type stack struct {
	cfg     config
	dir     string
	caFile  string
	tlsAddr string
	admin   string
	relay   *proc
	hap     *proc
	load    *proc
	client  *http.Client
}

// sample is one run's readings, before and after the idle connections.
type sample struct {
	Conns          int64 `json:"conns"` // phones + binaries the relay counts
	HAProxyRSS     int64 `json:"haproxy_rss_delta"`
	RelayRSS       int64 `json:"relay_rss_delta"`
	RelayUser      int64 `json:"relay_user_delta"`  // heap in use + stacks, after a GC
	SocketSlab     int64 `json:"socket_slab_delta"` // the caches a socket allocates from (kernel.go)
	Slab           int64 `json:"slab_delta"`        // meminfo Slab, less the TIME_WAIT cache's change
	SUnreclaim     int64 `json:"sunreclaim_delta"`
	TCPAdded       int64 `json:"tcp_sockets_added"`
	SocketsAdded   int64 `json:"sockets_added"`
	TWChange       int64 `json:"time_wait_change"`
	TCPSpecific    int64 `json:"tcp_caches_delta"`
	UnixSpecific   int64 `json:"unix_caches_delta"`
	Caches         map[string]int64
	LargeRoundTrip int64 `json:"large_round_trips"` // -1: not checked
	// KernelClean: the TCP sockets added are the count this run opened, so
	// no other process moved the machine-wide kernel figures much.
	KernelClean bool `json:"kernel_clean"`
}

func (c config) expectedTCP(conns int64) int64 {
	if c.unix {
		return 2 * conns // phone's end and HAProxy's front
	}
	return 4 * conns // and HAProxy→relay, both ends
}

// measure runs one whole stack, measures it and tears it down.
func measure(c config, bins binaries, logf func(string, ...any)) (s sample, err error) {
	dir, err := os.MkdirTemp("", "stackmem-")
	if err != nil {
		return s, err
	}
	st := &stack{cfg: c, dir: dir}
	t0 := time.Now()
	defer func() { logf("run took %v", time.Since(t0).Round(time.Millisecond)) }()
	defer func() {
		st.load.stop(syscall.SIGINT, 30*time.Second)
		st.hap.stop(syscall.SIGTERM, 5*time.Second)
		st.relay.stop(syscall.SIGTERM, 10*time.Second)
		os.RemoveAll(dir)
	}()
	if err := st.startRelay(bins.relay); err != nil {
		return s, err
	}
	if err := st.startHAProxy(); err != nil {
		return s, err
	}
	for range warmups {
		if err := st.healthz(); err != nil {
			return s, fmt.Errorf("warm-up request through HAProxy: %w", err)
		}
	}
	st.client.CloseIdleConnections()
	if err := st.settle(nil); err != nil {
		return s, err
	}
	logf("stack up after %v", time.Since(t0).Round(time.Millisecond))
	k0, h0, r0, u0, err := st.read()
	if err != nil {
		return s, err
	}
	binariesWanted := int64((c.phones + c.perBinary - 1) / c.perBinary)
	logf("baseline taken: TCP inuse %d, TIME_WAIT %d; opening %d phones and %d binaries", k0.tcpInuse, k0.tcpTW, c.phones, binariesWanted)
	if st.load, err = start("swload", bins.swload, "--addr", "wss://"+st.tlsAddr, "--ca-file", st.caFile,
		"--mode", "idle", "--phones", strconv.Itoa(c.phones), "--phones-per-binary", strconv.Itoa(c.perBinary),
		"--connect-rate", strconv.Itoa(c.connectRate), "--hold", holdFor.String(), "--progress", "0"); err != nil {
		return s, err
	}
	connectBy := time.Now().Add(time.Duration(float64(2*c.phones)/float64(c.connectRate)*float64(time.Second)) + 30*time.Second)
	for {
		ph, bi, err := st.connected()
		if err == nil && ph >= int64(c.phones) && bi >= binariesWanted {
			s.Conns = ph + bi
			break
		}
		if st.load.done() {
			return s, st.load.failure()
		}
		if time.Now().After(connectBy) {
			return s, fmt.Errorf("only %d phones and %d binaries connected (want %d and %d) by the deadline; swload says:\n%s",
				ph, bi, c.phones, binariesWanted, st.load.out.String())
		}
		time.Sleep(100 * time.Millisecond) // connects take seconds; polling the admin listener is cheap
	}
	if err := st.settle(st.load); err != nil {
		return s, err
	}
	logf("connected and settled after %v", time.Since(t0).Round(time.Millisecond))
	k1, h1, r1, u1, err := st.read()
	if err != nil {
		return s, err
	}
	s.HAProxyRSS, s.RelayRSS, s.RelayUser = h1-h0, r1-r0, u1-u0
	s.TWChange = k1.tcpTW - k0.tcpTW
	tw := k1.caches[twCache] - k0.caches[twCache]
	s.Slab, s.SUnreclaim = k1.slab-k0.slab-tw, k1.sunreclaim-k0.sunreclaim-tw
	s.TCPAdded, s.SocketsAdded = k1.tcpInuse-k0.tcpInuse, k1.socketsUsed-k0.socketsUsed
	s.Caches = map[string]int64{}
	for name, v := range k1.caches {
		if d := v - k0.caches[name]; d != 0 && name != twCache {
			s.Caches[name] = d
		}
	}
	specific := map[string]bool{}
	for _, n := range tcpCaches {
		name := slabName(n, k1.caches)
		specific[name] = true
		s.TCPSpecific += s.Caches[name]
	}
	for _, n := range unixCaches {
		if name := slabName(n, k1.caches); !specific[name] {
			specific[name] = true
			s.UnixSpecific += s.Caches[name]
		}
	}
	for name, d := range s.Caches {
		if socketCache(name, specific) {
			s.SocketSlab += d
		}
	}
	// Clean when the TCP sockets added are the count this run opened and
	// the TCP cache grew by about one object for each: other processes'
	// sockets coming and going break one or the other.
	want := c.expectedTCP(s.Conns)
	tcpName := slabName("TCP", k1.caches)
	perTCP := float64(s.Caches[tcpName]) / float64(max(s.TCPAdded, 1))
	size := float64(k1.objSize[tcpName])
	s.KernelClean = abs(s.TCPAdded-want) <= want/100+2 && (size == 0 || (perTCP > 0.9*size && perTCP < 1.1*size))
	if !s.KernelClean {
		logf("WARNING: %d TCP sockets added (%d expected), TCP slab grew %.0f bytes per socket (object size %.0f): other processes are opening or closing sockets, so the kernel figures are polluted; rerun",
			s.TCPAdded, want, perTCP, size)
	}
	s.LargeRoundTrip = -1
	if c.large {
		if s.LargeRoundTrip, err = st.largeCheck(bins.swload); err != nil {
			return s, err
		}
	}
	return s, nil
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

func (st *stack) startRelay(bin string) error {
	var err error
	if st.admin, err = haproxycfg.FreeAddr(); err != nil {
		return err
	}
	listen := ""
	if st.cfg.unix {
		listen = "unix:" + filepath.Join(st.dir, "relay.sock")
	} else if listen, err = haproxycfg.FreeAddr(); err != nil {
		return err
	}
	if st.relay, err = start("relay", bin, "--listen", listen, "--admin-listen", st.admin, "--pprof",
		"--proxy-protocol", "--rate-limit-burst", "0", "--max-connections", strconv.Itoa(fdLimit-1000),
		"--log-level", "warn"); err != nil {
		return err
	}
	deadline := time.Now().Add(startWait)
	for {
		if _, err := st.adminGet("/debug/pprof/cmdline"); err == nil {
			break
		}
		if st.relay.done() {
			if st.cfg.unix {
				return fmt.Errorf("the relay refused --listen %s (is unix-socket listening merged yet?): %w", listen, st.relay.failure())
			}
			return st.relay.failure()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relay admin listener not serving after %v:\n%s", startWait, st.relay.out.String())
		}
		time.Sleep(20 * time.Millisecond) // a process must start
	}
	if st.cfg.unix {
		st.cfg.server = "unix@" + strings.TrimPrefix(listen, "unix:")
	} else {
		st.cfg.server = listen
	}
	return nil
}

func (st *stack) startHAProxy() error {
	shipped, err := os.ReadFile(st.cfg.haproxyCfg)
	if err != nil {
		return err
	}
	var crt string
	if st.caFile, crt, err = haproxycfg.SelfSigned(st.dir); err != nil {
		return err
	}
	if st.tlsAddr, err = haproxycfg.FreeAddr(); err != nil {
		return err
	}
	cfg, err := haproxycfg.Loopback{TLSAddr: st.tlsAddr, Cert: crt, Server: st.cfg.server,
		Maxconn: st.cfg.conns() + maxconnSlack, Global: st.cfg.global}.Rewrite(string(shipped))
	if err != nil {
		return err
	}
	path := filepath.Join(st.dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return err
	}
	if st.hap, err = start("haproxy", st.cfg.haproxy, "-f", path, "-db"); err != nil {
		return err
	}
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(st.caFile)
	if err != nil {
		return err
	}
	pool.AppendCertsFromPEM(ca)
	// No keep-alive: every warm-up request is a handshake of its own.
	st.client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
	deadline := time.Now().Add(startWait)
	for {
		err := st.healthz()
		if err == nil {
			return nil
		}
		if st.hap.done() {
			return fmt.Errorf("%w\n--- config:\n%s", st.hap.failure(), cfg)
		}
		if st.relay.done() {
			return st.relay.failure()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no 200 from /healthz through HAProxy after %v (%v):\n%s", startWait, err, st.hap.out.String())
		}
		time.Sleep(50 * time.Millisecond) // HAProxy and its first health check must run
	}
}

func (st *stack) healthz() error {
	resp, err := st.client.Get("https://" + st.tlsAddr + "/healthz")
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("/healthz through HAProxy: status %d", resp.StatusCode)
	}
	return nil
}

func (st *stack) adminGet(path string) (string, error) {
	resp, err := http.Get("http://" + st.admin + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("relay admin %s: status %d", path, resp.StatusCode)
	}
	return string(b), err
}

// connected reads the relay's /healthz through HAProxy. Not the admin
// /metrics: its process_open_fds lists /proc/self/fd, which gives every
// open socket a proc inode and dentry, and that slab would be charged to
// the phones.
func (st *stack) connected() (phones, bins int64, err error) {
	resp, err := st.client.Get("https://" + st.tlsAddr + "/healthz")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	var h struct {
		Phones   int64 `json:"connected_phones"`
		Binaries int64 `json:"connected_binaries"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return 0, 0, fmt.Errorf("relay /healthz: %w", err)
	}
	return h.Phones, h.Binaries, nil
}

// settle waits until HAProxy's and the relay's RSS stop moving. Not the
// kernel's counts: they are machine-wide, and another process's churn
// would keep them moving.
func (st *stack) settle(load *proc) error {
	deadline := time.Now().Add(settleMax)
	var last [2]int64
	same := 0
	for same < settleSamples {
		time.Sleep(settleEvery) // what is being waited for is growth stopping
		h, err := kmem.VmRSS(st.hap.pid())
		if err != nil {
			return err
		}
		r, err := kmem.VmRSS(st.relay.pid())
		if err != nil {
			return err
		}
		if cur := [2]int64{h, r}; cur == last {
			same++
		} else {
			last, same = cur, 1
		}
		if load != nil && load.done() {
			return load.failure()
		}
		if time.Now().After(deadline) {
			return nil // still growing slowly; the figures say what they saw
		}
	}
	return nil
}

// read takes the kernel's figures, HAProxy's RSS, and the relay's RSS and
// user memory after a collection (pprof's heap profile with gc=1 runs one,
// then prints the runtime's MemStats).
func (st *stack) read() (k kernelSnap, hap, relayRSS, relayUser int64, err error) {
	body, err := st.adminGet("/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return k, 0, 0, 0, err
	}
	var heap, stack int64
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
			heap, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "# Stack = "); ok {
			stack, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	if heap == 0 {
		return k, 0, 0, 0, errors.New("relay heap profile: no HeapInuse line")
	}
	if relayRSS, err = kmem.VmRSS(st.relay.pid()); err != nil {
		return k, 0, 0, 0, err
	}
	if hap, err = kmem.VmRSS(st.hap.pid()); err != nil {
		return k, 0, 0, 0, err
	}
	k, err = readKernel()
	return k, hap, relayRSS, heap + stack, err
}

// largeCheck sends near-256 KiB messages through HAProxy both ways and
// returns how many round trips came back, each verified byte for byte by
// swload: HAProxy streams a tunnel, so tune.bufsize bounds a read, not a
// message.
func (st *stack) largeCheck(swload string) (int64, error) {
	p, err := start("swload (large messages)", swload, "--addr", "wss://"+st.tlsAddr, "--ca-file", st.caFile,
		"--mode", "active", "--phones", "2", "--phones-per-binary", "2", "--size", strconv.Itoa(largeSize),
		"--duration", "1s", "--progress", "0", "--source-ips", "1")
	if err != nil {
		return 0, err
	}
	<-p.exited
	for _, line := range strings.Split(p.out.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "SWLOAD_RESULT "); ok {
			var r struct {
				RoundTrips int64            `json:"round_trips"`
				Errors     map[string]int64 `json:"errors"`
			}
			if err := json.Unmarshal([]byte(v), &r); err != nil {
				return 0, fmt.Errorf("large-message check: %w", err)
			}
			if p.err != nil || r.RoundTrips == 0 {
				return r.RoundTrips, fmt.Errorf("large-message check (%d-byte frames through HAProxy) failed: %d round trips, errors %v:\n%s",
					largeSize, r.RoundTrips, r.Errors, p.out.String())
			}
			return r.RoundTrips, nil
		}
	}
	return 0, fmt.Errorf("large-message check: no result line: %w", p.failure())
}
