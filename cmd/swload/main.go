// Command swload is a load generator for Switchboard, or any relay that
// speaks the pyrycode relay protocol (/v1/server for binaries, /v1/client
// for phones). It plays both sides: echoing binaries, which send every
// {"conn_id":…,"frame":…} envelope straight back (it is also a valid
// binary→relay envelope), and phones, which send JSON frames and verify
// every reply end to end.
//
// # Modes
//
//	--mode idle    --phones N phones (spread over binaries, --phones-per-binary each)
//	               connect at --connect-rate per second; each sends one warm-up
//	               frame that must come back; then all are held idle (reading, so
//	               pings are answered) for --hold. The progress line shows how many
//	               are still live.
//	--mode active  --phones M phones keep --inflight W messages of --size S bytes
//	               each in flight for --duration. Every reply is checked byte for
//	               byte (phone id, sequence number and padding are rebuilt and
//	               compared, so content, routing and per-phone order are all
//	               verified) and its round trip timed. This is a closed loop:
//	               a phone sends its next message when a reply comes back.
//	  --rate R     open loop instead: R messages per second over all phones on
//	               a fixed schedule (each phone every phones/R seconds, the
//	               phones staggered evenly), sent whether or not replies have
//	               come back. --inflight is then only a cap on a phone's
//	               outstanding messages (default 64 with --rate): a scheduled
//	               send that would exceed it is skipped and counted as the error
//	               kind late_send. Latency runs from the scheduled send time,
//	               so a stalled relay is charged for every message it delayed
//	               (no coordinated omission); the pacer's own lateness is
//	               reported separately as the send lag.
//	--mode churn   phones connect, send one frame, get the echo and close (with a
//	               close handshake), repeatedly, at --connect-rate per second for
//	               --duration, using at most --phones concurrent phone slots.
//	--mode flood   peers that write as fast as loopback allows, beside a calm pair
//	               (see Floods below).
//
// Every phone frame is a JSON object of exactly --size bytes:
// {"c":<phone id>,"p":"<padding>","s":<sequence>}.
//
// # Target
//
// --addr is host:port (plain WebSocket, the default 127.0.0.1:8080), or a
// URL: ws://host[:port] the same, wss://host[:port] over TLS (port 443 by
// default), for a relay behind a TLS terminator such as deploy/haproxy.cfg.
// The URL's host is the TLS server name (SNI) and the name the certificate
// must carry; the certificate is verified against the system roots, or
// against --ca-file's PEM bundle (a self-signed or private CA). --insecure
// skips verification altogether, and says so on stderr at the start. A
// handshake that fails is a connect failure of its own kind: dial_tls_verify
// (the certificate), dial_tls_not_tls (the other end speaks plain HTTP) or
// dial_tls_alert.
//
// # Scale
//
// Sockets bind source addresses 127.0.0.2 … 127.0.0.(N+1) round-robin
// (--source-ips N, default 8; only for an IPv4 loopback --addr), so churn and
// large runs do not exhaust one address's ephemeral ports. A process may hold
// 20,000 open files; --procs K re-executes swload K times as workers, each
// driving an equal share of the phones (and the binaries those phones use),
// so that each stays under ~19,000 sockets; --procs 0 picks K from --phones.
// Workers report progress and their results (with whole latency histograms,
// fixed log buckets, so the merge is exact) as JSON lines to the parent, which
// prints the merged progress and summary. Workers connect, then wait for each
// other before the window opens.
//
// # Floods
//
// --mode flood --scenario S runs one hostile-but-honest load for --duration
// (in one process; loopback targets only):
//
//	binaries-to-phones  --flooders N binaries, each with one phone that reads
//	                    normally; each binary writes --size byte (default
//	                    200 KiB) envelopes {"conn_id":"<its phone>","frame":{…}}
//	                    back to back. Every frame the phone gets is compared
//	                    byte for byte.
//	phones-to-binary    N phones (--phones-per-binary to a binary, so 16 phones
//	                    are one binary) flooding --size byte JSON messages toward
//	                    binaries that read normally and check each envelope.
//	deaf-binary         the same phones, toward binaries that complete the
//	                    handshake and then never read their socket.
//
// A flooding phone the relay disconnects dials again after 100 ms (at most
// 1,000 times) while the window lasts; a flooding binary does not. Beside
// the flood, on its own server-id, a calm pair: a binary echoing envelopes
// and a phone sending a --calm-size (64) byte message every --calm-interval
// (10 ms), each round trip timed from its scheduled send time; the result
// gives count, p50, p99 and max, and how many were lost (no reply by the
// end of the drain) or late (over 1 s).
//
// --relay-pid P samples the relay's VmRSS from /proc/P/status every 100 ms
// (peak, at window start and end, and after the drain); past --max-rss
// (default 4GiB) the flooders are stopped at once and the run says ABORTED.
// --metrics-url (the relay's admin /metrics) is sampled every 250 ms: peak
// switchboard_buffered_bytes and switchboard_read_paused, and at the end
// switchboard_read_pauses_total, switchboard_closes_total and
// switchboard_drops_total by reason. Flooders and receivers the relay
// disconnected are counted by close code (close_<code>, or the socket error).
// At the end the flooders finish the message in hand and the receivers get
// up to --drain to catch up: what never arrived is "undelivered". The
// SWLOAD_RESULT line carries a "flood" object with all of it; its latency_us,
// round_trips and sends are the calm pair's. Exit status 1 also when the cap
// was hit, a calm message was lost, or (except for deaf-binary, whose peers
// the relay may rightly close) an honest peer was disconnected or a flood
// message lost. bench/flood.sh runs the standard set against a fresh relay.
//
// # Output
//
// Every second (--progress; 0 for none) a line on stderr: phase, live
// phones, connects, round trips per second, errors, connect failures, and
// drained connections once there are any. At the end a table on stdout and
// one machine-readable line:
//
//	SWLOAD_RESULT {"mode":"active","phones":64,...,"throughput_per_s":…,"latency_us":{"p50":…,"p99":…,"p999":…},"errors":{},"connect_failures":{},…}
//
// with mode, phones, inflight, size, duration, the send rate asked for and
// achieved (rate_target, 0 for the closed loop; rate_achieved, sends per
// second), round trips, throughput (the reply rate), p50/p99/p99.9 latency in
// µs (and send_lag_us in the open loop), errors by kind, connects and the connect rate
// achieved, connect failures by kind (http_<status> for a refused upgrade,
// close_<code> for a close right after the 101, dial_<error> otherwise), and
// swload's own CPU time (getrusage, itself plus its workers): on a small
// machine the generator competes with the relay, so subtract it from the
// machine's total to get the relay's CPU per round trip.
//
// When upgrades were refused 429 (http_429: the relay's per-IP upgrade rate
// limit, on by default at a burst of 20, which `make run` keeps), one hint
// line before the result says how many and to run the relay with
// --rate-limit-burst 0 for local load tests, or to spread the sources.
//
// # Relay drains
//
// Binaries answer the relay's close frames at once (the code echoed, then
// the socket closed), so a relay stopped under swload finishes its drain at
// once instead of holding each binary for its --close-linger. A 1001 (going
// away: the relay shutting down) is counted as drained, not as an error:
// "drained" in the table and drained, drained_binaries and
// drained_unanswered (messages drained phones had in flight, not counted
// lost) in the result. A drain alone fails nothing, since the relay did
// what it promises; what follows from it is counted where it happens (a
// churn phone's redial refused, say). So a run whose relay drained exits 0
// when nothing else went wrong; check drained in the result line where a
// full window matters.
//
// Exit status: 0 clean, 1 when anything failed (errors, connect failures,
// --timeout, a worker lost), 2 for bad flags, 130 when interrupted.
//
// # Bounds
//
// Connects are bounded by --dial-timeout and --reply-timeout (warm-up echo),
// the window by --hold or --duration, the end by --drain (outstanding replies,
// then each close handshake), and the whole run by --timeout (derived from
// the other flags when 0). SIGINT or SIGTERM ends the window early and winds
// down the same way; a second one exits at once.
//
// # Examples
//
//	go build -o /tmp/swload ./cmd/swload
//
//	# 10,000 idle phones at 2,000 connects/s, held for a minute
//	/tmp/swload --addr 127.0.0.1:8080 --mode idle --phones 10000 --connect-rate 2000 --hold 1m
//
//	# 100,000 idle phones: six worker processes (or --procs 0)
//	/tmp/swload --mode idle --phones 100000 --procs 6 --connect-rate 5000 --hold 2m
//
//	# 256 phones, 16 messages in flight each, 1 KiB frames, 30 s
//	/tmp/swload --mode active --phones 256 --inflight 16 --size 1024 --duration 30s
//
//	# open loop: 2,000 messages/s over 512 phones, at most 16 outstanding each
//	/tmp/swload --mode active --phones 512 --rate 2000 --inflight 16 --duration 30s
//
//	# connect/echo/close churn at 500 phones per second for 20 s
//	/tmp/swload --mode churn --phones 64 --connect-rate 500 --duration 20s
//
//	# through TLS (deploy/haproxy.cfg in front), trusting a private CA
//	/tmp/swload --addr wss://relay.example.com --ca-file ca.pem --mode idle --phones 1000 --hold 1m
//
//	# the goroutine-per-connection baseline relay, same load
//	/tmp/swload --addr 127.0.0.1:8081 --mode active --phones 256 --inflight 16
//
//	# 10 binaries flooding 200 KiB envelopes at their phones, relay RSS and metrics
//	/tmp/swload --mode flood --scenario binaries-to-phones --flooders 10 --duration 10s \
//	    --relay-pid $(pgrep -nx switchboard) --metrics-url http://127.0.0.1:9412/metrics
//
//	# just the numbers
//	/tmp/swload --mode active --phones 64 2>/dev/null | grep '^SWLOAD_RESULT ' | cut -d' ' -f2- | jq .throughput_per_s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "swload: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	worker := cfg.WorkerIndex >= 0
	go func() {
		first := true
		for range sig {
			switch {
			case first:
				first = false
				cancel()
			case !worker:
				// A second signal to the parent: stop waiting. Workers
				// ignore repeats (the terminal and the parent may both
				// forward one) and always finish their report.
				fmt.Fprintln(stderr, "swload: interrupted again, exiting")
				os.Exit(130)
			}
		}
	}()
	if worker {
		return runWorker(ctx, cfg, stdin, stdout)
	}
	res, err := Run(ctx, cfg, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "swload: %v\n", err)
		return 2
	}
	return exitCode(res)
}

// exitCode is the status a finished run exits with. Connections the relay
// drained (1001) are not failures and do not count (drain.go).
func exitCode(res *Result) int {
	switch {
	case res.ErrorCount() > 0 || res.WorkerFailures > 0 || res.TimedOut || (res.Flood != nil && res.Flood.Failed()):
		return 1
	case res.Interrupted:
		return 130
	}
	return 0
}
