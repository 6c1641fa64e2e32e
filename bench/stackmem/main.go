// Command stackmem measures what one idle phone costs across the whole
// stack on one box: HAProxy terminating TLS with the shipped
// deploy/haproxy.cfg (rewritten for loopback by internal/haproxycfg), the
// kernel's socket slab, and the relay. It builds the relay and swload,
// makes a self-signed certificate, runs HAProxy in front of the relay
// (--proxy-protocol, HAProxy sends PROXY v2), opens --phones idle wss://
// phones and their binaries with swload, waits until the relay counts them
// all and the readings settle, and reports the change per connection:
//
//   - HAProxy: VmRSS summed over its processes;
//   - kernel: /proc/meminfo Slab (and SUnreclaim) and the main
//     /proc/slabinfo caches, per socket added (/proc/net/sockstat), then
//     per phone on a production box, where a phone has 3 sockets (the
//     phone-facing one, HAProxy's to the node, the node's) while loopback
//     has 4 (swload's end too);
//   - relay: VmRSS and user memory (heap in use + stacks, after a GC).
//
// Every run is a fresh stack; -runs N repeats it and reports medians.
// Kernel slab is machine-wide: a run warns when the TCP sockets it added
// are not the count it expects (another process was opening sockets).
//
//	go run ./bench/stackmem -phones 3000 -runs 3
//	go run ./bench/stackmem -phones 3000 -global 'tune.bufsize 8192'
//	go run ./bench/stackmem -phones 3000 -unix   # relay on a unix socket
//
// -global adds a line to HAProxy's global section (repeatable), to try a
// setting without editing the shipped file. -unix has the relay listen on
// a unix socket (--listen unix:/path) and HAProxy's server line use
// unix@/path with send-proxy-v2, so one TCP pair per phone becomes a unix
// pair. It prints a table and one line: STACKMEM_RESULT {json}.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"switchboard/internal/haproxycfg"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// config is one invocation.
type config struct {
	phones, perBinary, connectRate, runs int
	unix, large                          bool
	global                               []string
	haproxyCfg, haproxy                  string
	relayBin, swloadBin                  string
	server                               string // set per run: the relay's address as HAProxy names it
}

const (
	defaultPhones = 3000
	// defaultPerBinary is the relay's default phones per server-id.
	defaultPerBinary = 16
	// defaultConnectRate keeps TLS handshakes from saturating a 2-core box
	// (which would only make the connect phase slow, not the figures wrong).
	defaultConnectRate = 1000
	defaultRuns        = 3
)

func (c config) conns() int { return c.phones + (c.phones+c.perBinary-1)/c.perBinary }

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, "; ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func parse(args []string, stderr io.Writer) (config, error) {
	var c config
	var global multiFlag
	fs := flag.NewFlagSet("stackmem", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.phones, "phones", defaultPhones, "idle phones to open")
	fs.IntVar(&c.perBinary, "phones-per-binary", defaultPerBinary, "phones per binary (server-id)")
	fs.IntVar(&c.connectRate, "connect-rate", defaultConnectRate, "swload connects per second")
	fs.IntVar(&c.runs, "runs", defaultRuns, "fresh stacks to measure; medians are reported")
	fs.BoolVar(&c.unix, "unix", false, "relay listens on a unix socket; HAProxy reaches it with unix@path and send-proxy-v2")
	fs.BoolVar(&c.large, "large", true, "after measuring, check that ~256 KiB messages pass HAProxy both ways")
	fs.Var(&global, "global", "a line added to HAProxy's global section (repeatable), e.g. 'tune.bufsize 8192'")
	fs.StringVar(&c.haproxyCfg, "config", "", "HAProxy config to run (default: the repository's deploy/haproxy.cfg)")
	fs.StringVar(&c.haproxy, "haproxy", "", "haproxy binary (default: on PATH or /usr/sbin)")
	fs.StringVar(&c.relayBin, "relay", "", "prebuilt switchboard binary (default: built from ./cmd/switchboard)")
	fs.StringVar(&c.swloadBin, "swload", "", "prebuilt swload binary (default: built from ./cmd/swload)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.global = global
	switch {
	case c.phones < 1 || c.perBinary < 1 || c.connectRate < 1 || c.runs < 1:
		return c, errors.New("-phones, -phones-per-binary, -connect-rate and -runs must be at least 1")
	case hapFDsPerConn*(c.conns()+maxconnSlack) > fdLimit-1000:
		return c, fmt.Errorf("-phones %d: HAProxy would need %d open files, over the %d a process may have here",
			c.phones, hapFDsPerConn*(c.conns()+maxconnSlack), fdLimit)
	}
	if c.haproxy == "" {
		if c.haproxy = haproxycfg.Path(); c.haproxy == "" {
			return c, errors.New("haproxy is not installed (apt-get install haproxy)")
		}
	}
	return c, nil
}

type binaries struct{ relay, swload string }

func run(args []string, stdout, stderr io.Writer) int {
	c, err := parse(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "stackmem:", err)
		return 2
	}
	logf := func(f string, a ...any) { fmt.Fprintf(stderr, "stackmem: "+f+"\n", a...) }
	root, err := repoRoot()
	if err != nil {
		logf("%v", err)
		return 1
	}
	if c.haproxyCfg == "" {
		c.haproxyCfg = filepath.Join(root, "deploy", "haproxy.cfg")
	}
	bins := binaries{relay: c.relayBin, swload: c.swloadBin}
	if bins.relay == "" || bins.swload == "" {
		dir, err := os.MkdirTemp("", "stackmem-bin-")
		if err != nil {
			logf("%v", err)
			return 1
		}
		defer os.RemoveAll(dir)
		for _, b := range []struct {
			dst *string
			pkg string
		}{{&bins.relay, "./cmd/switchboard"}, {&bins.swload, "./cmd/swload"}} {
			if *b.dst == "" {
				if *b.dst, err = build(root, dir, b.pkg); err != nil {
					logf("%v", err)
					return 1
				}
			}
		}
	}
	tlsLib := haproxyTLS(c.haproxy)
	var samples []sample
	for i := range c.runs {
		logf("run %d/%d: %d phones (%d connections), %s", i+1, c.runs, c.phones, c.conns(), modeName(c))
		s, err := measure(c, bins, logf)
		if err != nil {
			logf("run %d: %v", i+1, err)
			return 1
		}
		samples = append(samples, s)
	}
	report(stdout, c, tlsLib, samples)
	return 0
}

func modeName(c config) string {
	if c.unix {
		return "HAProxy to relay over a unix socket"
	}
	return "HAProxy to relay over TCP"
}

// haproxyTLS is what `haproxy -vv` says about the TLS library it was built
// with and runs on.
func haproxyTLS(hap string) string {
	out, _ := exec.Command(hap, "-vv").CombinedOutput()
	var parts []string
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "HAProxy version ") {
			parts = append(parts, strings.Fields(line)[2])
		}
		if v, ok := strings.CutPrefix(line, "Running on OpenSSL version : "); ok {
			parts = append(parts, "running on "+v)
		} else if v, ok := strings.CutPrefix(line, "Built with OpenSSL version : "); ok {
			parts = append(parts, "built with "+v)
		}
	}
	return strings.Join(parts, ", ")
}
