package main

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// Modes.
const (
	modeIdle   = "idle"
	modeActive = "active"
	modeChurn  = "churn"
	modeFlood  = "flood"
)

// Config is one run. Zero fields take the defaults below (see defaults).
type Config struct {
	Mode            string
	Addr            string
	Phones          int     // idle/active: phones; churn: concurrent phone slots
	PhonesPerBinary int     // phones sharing one server-id (one binary)
	ConnectRate     float64 // new connections per second, all processes together; 0 = unpaced
	Hold            time.Duration
	Duration        time.Duration
	Inflight        int     // closed loop: messages kept in flight per phone; open loop: the cap
	Rate            float64 // active: open loop at this many messages per second in total; 0 = closed loop
	Size            int
	SourceIPs       int // -1 = do not bind a source address
	Procs           int // worker processes; 0 = as many as the open-file limit needs; 1 = in-process
	Timeout         time.Duration
	DialTimeout     time.Duration
	ReplyTimeout    time.Duration // warm-up echo and churn echo
	Drain           time.Duration // outstanding replies and close handshakes at the end
	XFF             bool          // send a distinct X-Forwarded-For per connection
	Progress        time.Duration // progress interval (1 s); negative = no progress lines (--progress 0)

	// TLS (target.go): a wss:// --addr sets TLS; CAFile is a PEM bundle to
	// trust instead of the system roots; Insecure skips verification.
	TLS      bool
	CAFile   string
	Insecure bool
	tlsConf  *tls.Config // built by resolveTarget

	// --mode flood (flood.go; checked in floodconfig.go).
	Scenario     string
	Flooders     int
	CalmInterval time.Duration
	CalmSize     int
	RelayPID     int    // 0 = no RSS sampling
	MaxRSS       int64  // abort cap on the relay's RSS
	MetricsURL   string // the relay's /metrics; "" = not read

	// Set by the parent for its workers (hidden flags).
	WorkerIndex int // -1 outside a worker
	RunID       string
	// Exe is the binary re-executed as workers; empty = os.Executable().
	Exe string
}

const (
	defaultAddr        = "127.0.0.1:8080"
	defaultPhones      = 100
	defaultPerBinary   = 16
	defaultConnectRate = 1000
	defaultHold        = 30 * time.Second
	defaultDuration    = 10 * time.Second
	defaultInflight    = 1
	// defaultRateCap is --inflight's default with --rate: in the open loop
	// it is only a cap, and a cap of one would turn any hiccup into skips.
	defaultRateCap     = 64
	defaultSize        = 256
	defaultSourceIPs   = 8
	defaultDialTimeout = 10 * time.Second
	defaultReplyTO     = 10 * time.Second
	defaultDrain       = 5 * time.Second
	// socketBudget is what one process may hold: the machine's hard limit is
	// 20,000 open files per process, and some are needed for everything else.
	socketBudget = 19000
)

func (c *Config) defaults() {
	if c.Mode == "" {
		c.Mode = modeIdle
	}
	if c.Addr == "" {
		c.Addr = defaultAddr
	}
	setInt(&c.Phones, defaultPhones)
	setInt(&c.PhonesPerBinary, defaultPerBinary)
	if c.Rate > 0 {
		setInt(&c.Inflight, defaultRateCap)
	}
	setInt(&c.Inflight, defaultInflight)
	if c.Mode == modeFlood {
		setInt(&c.Size, defaultFloodSize)
		setInt(&c.Procs, 1)
		setInt(&c.Flooders, defaultFlooders)
		setInt(&c.CalmSize, defaultCalmSize)
		setDur(&c.CalmInterval, defaultCalmInterval)
		if c.MaxRSS == 0 {
			c.MaxRSS = defaultMaxRSS
		}
	}
	setInt(&c.Size, defaultSize)
	setInt(&c.SourceIPs, defaultSourceIPs)
	setDur(&c.Hold, defaultHold)
	setDur(&c.Duration, defaultDuration)
	setDur(&c.DialTimeout, defaultDialTimeout)
	setDur(&c.ReplyTimeout, defaultReplyTO)
	setDur(&c.Drain, defaultDrain)
	setDur(&c.Progress, time.Second)
	if c.Procs == 0 {
		c.Procs = autoProcs(c.Phones, c.PhonesPerBinary)
	}
	if c.Timeout == 0 {
		c.Timeout = c.autoTimeout()
	}
	if c.RunID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.RunID = hex.EncodeToString(b[:])
	}
}

func setInt(v *int, d int) {
	if *v == 0 {
		*v = d
	}
}

func setDur(v *time.Duration, d time.Duration) {
	if *v == 0 {
		*v = d
	}
}

// binariesFor is how many binaries n phones need.
func binariesFor(n, perBinary int) int { return (n + perBinary - 1) / perBinary }

// socketsFor is what one process holding n phones keeps open.
func socketsFor(n, perBinary int) int { return n + binariesFor(n, perBinary) }

// autoProcs picks enough processes to keep each under the socket budget.
func autoProcs(phones, perBinary int) int {
	s := socketsFor(phones, perBinary)
	return max(1, (s+socketBudget-1)/socketBudget)
}

// window is the measured part of the run.
func (c *Config) window() time.Duration {
	if c.Mode == modeIdle {
		return c.Hold
	}
	return c.Duration
}

// autoTimeout bounds the whole run: twice the paced connect time, the
// window, and the drain and close phases with slack.
func (c *Config) autoTimeout() time.Duration {
	conns := float64(socketsFor(c.Phones, c.PhonesPerBinary))
	if c.Mode == modeFlood {
		conns = float64(2*c.Flooders + 2)
	}
	rate := c.ConnectRate
	if rate <= 0 {
		rate = 2000 // a guess for unpaced connects
	}
	connect := time.Duration(2 * conns / rate * float64(time.Second))
	return connect + c.window() + 3*c.Drain + c.ReplyTimeout + 30*time.Second
}

func (c *Config) validate() error {
	switch {
	case c.Mode != modeIdle && c.Mode != modeActive && c.Mode != modeChurn && c.Mode != modeFlood:
		return fmt.Errorf("--mode must be idle, active, churn or flood, got %q", c.Mode)
	case c.Phones < 1:
		return fmt.Errorf("--phones must be at least 1, got %d", c.Phones)
	case c.PhonesPerBinary < 1:
		return fmt.Errorf("--phones-per-binary must be at least 1, got %d", c.PhonesPerBinary)
	case c.ConnectRate < 0:
		return fmt.Errorf("--connect-rate must not be negative, got %g", c.ConnectRate)
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return fmt.Errorf("--rate must be a non-negative number, got %g", c.Rate)
	case c.Rate > 0 && c.Mode != modeActive:
		return fmt.Errorf("--rate applies to --mode active only")
	case c.Inflight < 1 || c.Inflight > 1<<16:
		return fmt.Errorf("--inflight must be in 1..65536, got %d", c.Inflight)
	case c.Size < minPayload || c.Size > maxPayload:
		return fmt.Errorf("--size must be in %d..%d, got %d", minPayload, maxPayload, c.Size)
	case c.SourceIPs < -1 || c.SourceIPs > 254:
		return fmt.Errorf("--source-ips must be in 0..254, got %d", c.SourceIPs)
	case c.Procs < 1 || c.Procs > c.Phones:
		return fmt.Errorf("--procs must be in 0..--phones, got %d", c.Procs)
	case c.Hold <= 0 || c.Duration <= 0 || c.Timeout <= 0 || c.DialTimeout <= 0 || c.ReplyTimeout <= 0 || c.Drain <= 0 || c.Progress == 0:
		return errors.New("durations must be positive")
	}
	if err := c.resolveTarget(); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("--addr: %v", err)
	}
	if c.Mode == modeFlood {
		return c.validateFlood()
	}
	// Each process must fit the open-file limit with its phones and binaries.
	per := (c.Phones + c.Procs - 1) / c.Procs
	need := socketsFor(per, c.PhonesPerBinary)
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur > 0 {
		if limit := int(min(rl.Cur, 1<<30)) - 64; need > limit {
			return fmt.Errorf("%d phones per process need %d sockets, over the open-file limit %d: use --procs %d (or --procs 0)",
				per, need, rl.Cur, autoProcs(c.Phones, c.PhonesPerBinary))
		}
	}
	return nil
}

// sourceAddrs returns the local addresses to bind, round-robin: 127.0.0.2 …
// 127.0.0.(n+1) when the target is IPv4 loopback, none otherwise (a
// loopback source cannot reach another host).
func sourceAddrs(addr string, n int) []net.Addr {
	if n <= 0 {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Is4() || !ip.IsLoopback() {
		return nil
	}
	out := make([]net.Addr, n)
	for i := range out {
		out[i] = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))}
	}
	return out
}

// flagSet defines every flag on c. Hidden worker flags are included but
// left out of the usage text.
func flagSet(c *Config, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("swload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Mode, "mode", modeIdle, "idle | active | churn | flood")
	fs.StringVar(&c.Addr, "addr", defaultAddr, "relay address: host:port, or a ws:// or wss:// URL (scheme, host, port; wss:// dials TLS); the only address dialled")
	fs.StringVar(&c.CAFile, "ca-file", "", "wss://: trust the certificates in this PEM file (a self-signed or private CA) instead of the system roots")
	fs.BoolVar(&c.Insecure, "insecure", false, "wss://: do not verify the relay's certificate at all (says so on stderr; prefer --ca-file)")
	fs.IntVar(&c.Phones, "phones", defaultPhones, "phones (idle, active); concurrent phone slots (churn)")
	fs.IntVar(&c.PhonesPerBinary, "phones-per-binary", defaultPerBinary, "phones per server-id / binary")
	fs.Float64Var(&c.ConnectRate, "connect-rate", defaultConnectRate, "new connections per second over all processes (0 = unpaced)")
	fs.DurationVar(&c.Hold, "hold", defaultHold, "idle: how long to hold the connections after all connected")
	fs.DurationVar(&c.Duration, "duration", defaultDuration, "active, churn: how long to send / churn")
	fs.IntVar(&c.Inflight, "inflight", defaultInflight, fmt.Sprintf("active: messages in flight per phone; with --rate, the most a phone may have outstanding (default there %d)", defaultRateCap))
	fs.Float64Var(&c.Rate, "rate", 0, "active: open loop, R messages per second over all phones on a fixed schedule, latency from the scheduled time (0 = closed loop)")
	fs.IntVar(&c.Size, "size", defaultSize, fmt.Sprintf("phone frame size in bytes (a JSON object, %d..%d); flood: each flood message's size, default %d (200 KiB)", minPayload, maxPayload, defaultFloodSize))
	fs.IntVar(&c.SourceIPs, "source-ips", defaultSourceIPs, "bind source addresses 127.0.0.2 … 127.0.0.(N+1) round-robin (loopback targets only; 0 = don't)")
	fs.IntVar(&c.Procs, "procs", 1, "worker processes (0 = enough to keep each under ~19,000 sockets)")
	fs.DurationVar(&c.Timeout, "timeout", 0, "hard limit on the whole run (0 = derived from the other flags)")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", defaultDialTimeout, "TCP connect + upgrade limit per connection")
	fs.DurationVar(&c.ReplyTimeout, "reply-timeout", defaultReplyTO, "limit for a warm-up / churn echo")
	fs.DurationVar(&c.Drain, "drain", defaultDrain, "at the end: wait this long for outstanding replies and for each close handshake")
	fs.BoolVar(&c.XFF, "xff", false, "send a distinct X-Forwarded-For per connection (for relays with per-IP limits and forwarded headers trusted)")
	fs.DurationVar(&c.Progress, "progress", time.Second, "progress line interval on stderr (0 = no progress lines)")
	fs.StringVar(&c.Scenario, "scenario", "", "flood: "+scenBinariesToPhones+" | "+scenPhonesToBinary+" | "+scenDeafBinary)
	fs.IntVar(&c.Flooders, "flooders", defaultFlooders, "flood: flooding binaries ("+scenBinariesToPhones+") or phones (the others, --phones-per-binary to a binary)")
	fs.DurationVar(&c.CalmInterval, "calm-interval", defaultCalmInterval, "flood: the calm phone sends one message this often")
	fs.IntVar(&c.CalmSize, "calm-size", defaultCalmSize, fmt.Sprintf("flood: the calm phone's message size in bytes (%d..%d)", minPayload, maxCalmSize))
	fs.IntVar(&c.RelayPID, "relay-pid", 0, "flood: sample this process's VmRSS every 100 ms (0 = don't)")
	c.MaxRSS = defaultMaxRSS
	fs.Var(byteSize{&c.MaxRSS}, "max-rss", "flood: stop the flooders when the relay's RSS passes this (bytes, or with KiB/MiB/GiB)")
	fs.StringVar(&c.MetricsURL, "metrics-url", "", "flood: the relay's /metrics (loopback http://), sampled every 250 ms")
	fs.IntVar(&c.WorkerIndex, "worker-index", -1, "internal: run as worker N of --procs")
	fs.StringVar(&c.RunID, "run-id", "", "internal: run identifier shared by the workers (server-ids embed it)")
	hidden := map[string]bool{"worker-index": true, "run-id": true}
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: swload --mode idle|active|churn|flood [flags]  (see go doc switchboard/cmd/swload)")
		fs.VisitAll(func(f *flag.Flag) {
			if hidden[f.Name] {
				return
			}
			fmt.Fprintf(stderr, "  --%s\t%s (default %q)\n", f.Name, f.Usage, f.DefValue)
		})
	}
	return fs
}

// parseFlags reads args into a Config (defaults applied, validated).
func parseFlags(args []string, stderr io.Writer) (Config, error) {
	var c Config
	fs := flagSet(&c, stderr)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.Rate > 0 && !set["inflight"] {
		c.Inflight = defaultRateCap
	}
	if c.Mode == modeFlood && !set["size"] {
		c.Size = defaultFloodSize
	}
	// Flag defaults are real values, so a zero here was asked for: it is an
	// error, except where the flag text gives zero a meaning (source-ips 0 =
	// don't bind, procs 0 and timeout 0 = derive, connect-rate 0 = unpaced,
	// progress 0 = none).
	for name, v := range map[string]int{"phones": c.Phones, "phones-per-binary": c.PhonesPerBinary, "inflight": c.Inflight, "size": c.Size,
		"flooders": c.Flooders, "calm-size": c.CalmSize} {
		if v == 0 {
			return c, fmt.Errorf("--%s must be positive", name)
		}
	}
	for name, v := range map[string]time.Duration{"hold": c.Hold, "duration": c.Duration, "dial-timeout": c.DialTimeout,
		"reply-timeout": c.ReplyTimeout, "drain": c.Drain, "calm-interval": c.CalmInterval} {
		if v == 0 {
			return c, fmt.Errorf("--%s must be positive", name)
		}
	}
	if c.SourceIPs == 0 {
		c.SourceIPs = -1
	}
	if c.Progress <= 0 {
		c.Progress = -1 // a zero Config means the default interval
	}
	c.defaults()
	return c, c.validate()
}

// workerArgs is the command line for worker i: every setting explicit, so
// the worker derives exactly the parent's view and its own share.
func workerArgs(c *Config, i int) []string {
	d := func(v time.Duration) string { return v.String() }
	src := c.SourceIPs
	if src < 0 {
		src = 0
	}
	prog := c.Progress
	if prog < 0 {
		prog = 0
	}
	args := []string{
		"--mode", c.Mode,
		"--addr", c.target(),
		"--phones", strconv.Itoa(c.Phones),
		"--phones-per-binary", strconv.Itoa(c.PhonesPerBinary),
		"--connect-rate", strconv.FormatFloat(c.ConnectRate, 'g', -1, 64),
		"--hold", d(c.Hold),
		"--duration", d(c.Duration),
		"--inflight", strconv.Itoa(c.Inflight),
		"--rate", strconv.FormatFloat(c.Rate, 'g', -1, 64),
		"--size", strconv.Itoa(c.Size),
		"--source-ips", strconv.Itoa(src),
		"--procs", strconv.Itoa(c.Procs),
		"--timeout", d(c.Timeout),
		"--dial-timeout", d(c.DialTimeout),
		"--reply-timeout", d(c.ReplyTimeout),
		"--drain", d(c.Drain),
		"--progress", d(prog),
		"--run-id", c.RunID,
		"--worker-index", strconv.Itoa(i),
	}
	if c.XFF {
		args = append(args, "--xff")
	}
	if c.CAFile != "" {
		args = append(args, "--ca-file", c.CAFile)
	}
	if c.Insecure {
		args = append(args, "--insecure")
	}
	return args
}

// share is one process's part of the run.
type share struct {
	index, procs int
	phones       int // phones (or churn slots) this process drives
	offset       int // global index of its first phone
	binaries     int
	rate         float64 // its connect rate
}

func shareOf(c *Config, i int) share {
	k := c.Procs
	base, extra := c.Phones/k, c.Phones%k
	n := base
	if i < extra {
		n++
	}
	return share{
		index: i, procs: k,
		phones:   n,
		offset:   i*base + min(i, extra),
		binaries: binariesFor(n, c.PhonesPerBinary),
		rate:     c.ConnectRate / float64(k),
	}
}
