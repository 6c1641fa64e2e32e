// Command baseline-relay runs the goroutine-per-connection baseline relay
// (package switchboard/bench/baseline) as its own process, so load runs can
// compare it with switchboard on equal terms.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served only on --admin-listen
	"os"
	"os/signal"
	"syscall"
	"time"

	"switchboard/bench/baseline"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	var (
		listen   string
		admin    string
		logLevel string
		cfg      baseline.Config
	)
	fs := flag.NewFlagSet("baseline-relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&listen, "listen", ":8081", "listen address (WebSocket endpoints and /healthz)")
	fs.DurationVar(&cfg.PingInterval, "ping-interval", 30*time.Second, "heartbeat ping period")
	fs.DurationVar(&cfg.PongTimeout, "pong-timeout", 30*time.Second, "how long a pong may take before 1011")
	fs.DurationVar(&cfg.WriteTimeout, "write-timeout", 10*time.Second, "per outbound message")
	fs.Int64Var(&cfg.MaxMessageBytes, "max-message-bytes", 262144, "largest inbound message")
	fs.IntVar(&cfg.PhonesPerServer, "phones-per-server", 16, "phones per server-id")
	fs.IntVar(&cfg.PhoneQueue, "phone-queue", 256, "outbound frames queued per phone before 1011")
	fs.StringVar(&cfg.Version, "health-version", "baseline", "version string reported by /healthz")
	fs.BoolVar(&cfg.ClaimBeforeUpgrade, "claim-before-upgrade", false,
		"decide a binary's claim before its 101 (Switchboard's order); off, the claim follows the 101 as in the reference and a phone dialled right after may get 4404")
	fs.StringVar(&admin, "admin-listen", "", "admin listener serving net/http/pprof (same as switchboard --pprof); empty disables it")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(stderr, "baseline-relay: invalid log-level %q\n", logLevel)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.Logger = log

	relay := baseline.New(cfg)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintf(stderr, "baseline-relay: listen: %v\n", err)
		return 1
	}
	if admin != "" {
		aln, err := net.Listen("tcp", admin)
		if err != nil {
			fmt.Fprintf(stderr, "baseline-relay: admin listen: %v\n", err)
			return 1
		}
		// The default mux carries net/http/pprof's handlers.
		go func() { _ = http.Serve(aln, http.DefaultServeMux) }()
	}
	srv := &http.Server{Handler: relay, ReadHeaderTimeout: 5 * time.Second}
	log.Info("listening", "addr", ln.Addr().String())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s.String())
	case err := <-served:
		log.Error("serve failed", "err", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx) // stops the listener; upgraded connections are the relay's
	if err := relay.Shutdown(ctx); err != nil {
		log.Warn("drain incomplete", "err", err)
	}
	return 0
}
