// Command switchboard runs the relay.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"switchboard/loop"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	listen  string
	admin   string
	pprof   bool
	cfg     loop.Config
	showVer bool
	logLvl  string
}

func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "switchboard: %v\n", err)
		return 2
	}
	// Every field holds a flag's value (defaults included), so a zero here was
	// asked for; validate before loop.New would read it as "use the default".
	if err := opts.cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "switchboard: %v\n", err)
		return 2
	}
	if opts.showVer {
		fmt.Fprintln(stdout, "switchboard", version)
		return 0
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(opts.logLvl)); err != nil {
		fmt.Fprintf(stderr, "switchboard: invalid log-level %q\n", opts.logLvl)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	opts.cfg.Logger = log
	opts.cfg.Version = version
	srv, err := loop.New(opts.cfg)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard: %v\n", err)
		return 2
	}
	ln, err := net.Listen("tcp", opts.listen)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard: listen: %v\n", err)
		return 1
	}
	if opts.admin != "" {
		addr, stop, err := serveAdmin(opts.admin, opts.pprof)
		if err != nil {
			fmt.Fprintf(stderr, "switchboard: admin listen: %v\n", err)
			return 1
		}
		defer stop()
		log.Info("admin listening", "addr", addr.String(), "pprof", opts.pprof)
	}
	cfg := srv.Config()
	log.Info("listening", "addr", ln.Addr().String(), "version", version,
		"max_connections", cfg.MaxConnections, "phones_per_server", cfg.PhonesPerServer,
		"max_message_bytes", cfg.MaxMessageBytes)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s.String())
	case err := <-served:
		if err != nil {
			log.Error("serve failed", "err", err)
			return 1
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	return 0
}

// parseFlags reads flags, each also settable as SWITCHBOARD_<FLAG_NAME>
// (dashes become underscores); a flag on the command line wins.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("switchboard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", ":8080", "main listener address (WebSocket endpoints and /healthz)")
	fs.IntVar(&o.cfg.MaxConnections, "max-connections", loop.DefaultMaxConnections(),
		"live WebSocket connections allowed, binaries and phones together; beyond it upgrades get 503 (default: open-file limit minus headroom)")
	fs.IntVar(&o.cfg.PhonesPerServer, "phones-per-server", loop.DefaultPhonesPerServer, "phones per server-id; one more is closed 4429")
	fs.IntVar(&o.cfg.MaxMessageBytes, "max-message-bytes", loop.DefaultMaxMessageBytes, "largest inbound message in bytes; larger is closed 1009")
	fs.IntVar(&o.cfg.PhoneOutboxBytes, "phone-outbox-bytes", loop.DefaultPhoneOutboxBytes, "outbound budget per phone (frame length + 64 per frame); overflow closes the phone 1011")
	fs.IntVar(&o.cfg.BinaryOutboxBytes, "binary-outbox-bytes", loop.DefaultBinaryOutboxBytes, "outbound budget per binary; the phone whose frame would overflow it is closed 1011")
	fs.IntVar(&o.cfg.MaxRequestHeaderBytes, "max-request-header-bytes", loop.DefaultMaxRequestHeaderBytes, "largest HTTP request head; larger gets 431")
	fs.DurationVar(&o.cfg.WriteTimeout, "write-timeout", loop.DefaultWriteTimeout, "how long a write to one peer may block before that peer is dropped")
	fs.DurationVar(&o.cfg.CloseLinger, "close-linger", loop.DefaultCloseLinger, "how long a closed connection waits for the peer's close answer")
	fs.StringVar(&o.admin, "admin-listen", "127.0.0.1:9090", "admin listener for operator endpoints (pprof); empty disables it")
	fs.BoolVar(&o.pprof, "pprof", false, "serve net/http/pprof under /debug/pprof/ on the admin listener")
	fs.StringVar(&o.logLvl, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&o.showVer, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		env := "SWITCHBOARD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := os.LookupEnv(env)
		if !ok || set[f.Name] || envErr != nil {
			return
		}
		if err := f.Value.Set(v); err != nil {
			envErr = fmt.Errorf("invalid value %q for %s: %v", v, env, err)
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	return o, nil
}
