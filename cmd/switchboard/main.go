// Command switchboard runs the relay.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"switchboard/loop"
	"switchboard/push"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	listen     string
	admin      string
	pprof      bool
	adminTLS   [2]string // --admin-tls-cert-file, --admin-tls-key-file
	adminAuth  string    // --admin-basic-auth-file
	cfg        loop.Config
	showVer    bool
	logLvl     string
	logFmt     string
	production bool
	fcmCreds   string
	fcmURL     string
	fcmToken   string
}

func run(args []string, stdout, stderr io.Writer) int {
	// Signals are caught before anything else, so a SIGHUP during start-up
	// does not kill the relay either.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	opts, err := parseFlags(args, os.Environ(), stdout)
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
	creds, err := loadFCMCredentials(opts.fcmCreds)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard: %v\n", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(opts.logLvl)); err != nil {
		fmt.Fprintf(stderr, "switchboard: invalid log-level %q\n", opts.logLvl)
		return 2
	}
	log, err := newLogger(stderr, opts.logFmt, level)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard: %v\n", err)
		return 2
	}
	if opts.production {
		if err := checkPrivileges(); err != nil {
			fmt.Fprintf(stderr, "switchboard: %v\n", err)
			return 2
		}
	}
	opts.cfg.Logger = log
	opts.cfg.Version = version
	if creds != nil {
		waker, err := push.New(push.Config{Credentials: creds, Endpoint: opts.fcmURL, TokenURL: opts.fcmToken, Logger: log})
		if err != nil {
			fmt.Fprintf(stderr, "switchboard: %v\n", err)
			return 2
		}
		defer waker.Close() // after Shutdown: no binary is left to ask for a wake
		opts.cfg.Push = waker
	}
	srv, err := loop.New(opts.cfg)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard: %v\n", err)
		return 2
	}
	// A well-formed address that cannot be bound (in use, not ours, a
	// socket file a live relay holds) exits 1, not 2: the port may come
	// free, so systemd should try again.
	ln, err := listen(opts.listen)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard: listen: %v\n", err)
		return 1
	}
	// Shutdown closes it; this covers the exits before that. Closing a unix
	// listener removes its socket file.
	defer ln.Close()
	if opts.admin != "" {
		admin, err := loadAdmin(adminConfig{addr: opts.admin, pprof: opts.pprof,
			tlsCertFile: opts.adminTLS[0], tlsKeyFile: opts.adminTLS[1], basicAuthFile: opts.adminAuth})
		if err != nil {
			fmt.Fprintf(stderr, "switchboard: %v\n", err)
			return 2
		}
		addr, stop, err := admin.serve(srv)
		if err != nil {
			fmt.Fprintf(stderr, "switchboard: admin listen: %v\n", err)
			return 1
		}
		defer stop()
		log.Info("admin listening", "addr", addr.String(), "pprof", opts.pprof, "tls", admin.tls != nil, "basic_auth", admin.auth != nil)
	}
	cfg := srv.Config()
	log.Info("listening", "addr", listenAddr(ln), "version", version,
		"max_connections", cfg.MaxConnections, "phones_per_server", cfg.PhonesPerServer,
		"max_message_bytes", cfg.MaxMessageBytes, "max_input_buffer_bytes", cfg.MaxInputBufferBytes,
		"memory_budget_bytes", cfg.MemoryBudgetBytes, "rate_limit_burst", cfg.RateLimitBurst,
		"rate_limit_interval", cfg.RateLimitInterval, "proxy_protocol", cfg.ProxyProtocol,
		"trust_x_forwarded_for", cfg.TrustXForwardedFor, "binary_max_lifetime", cfg.BinaryMaxLifetime,
		"push", creds != nil)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := waitForStop(sig, served, log); err != nil {
		log.Error("serve failed", "err", err)
		return 1
	}
	// Shutdown bounds itself by --drain-timeout.
	if err := srv.Shutdown(context.Background()); err != nil {
		log.Warn("shutdown", "err", err)
	}
	log.Info("stopped")
	return 0
}

// waitForStop returns when SIGTERM or SIGINT arrives (nil) or Serve ends
// (its error). SIGHUP is logged and otherwise ignored: its default action
// would kill the relay without a close frame, and systemd's
// Restart=on-failure counts death by SIGHUP as a clean exit and leaves the
// node down. A terminal closing, or a reload sent by habit, must not take
// down every connection.
func waitForStop(sig <-chan os.Signal, served <-chan error, log *slog.Logger) error {
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				log.Warn("signal ignored", "signal", "SIGHUP", "why", "it has no meaning for the relay; SIGTERM drains and stops it")
				continue
			}
			log.Info("stopping", "signal", s.String())
			return nil
		case err := <-served:
			return err
		}
	}
}

// credentialsJSONEnv holds the FCM key itself, for platforms that hand
// secrets over as environment variables. It is not a flag: a key on the
// command line would show in the process list.
const credentialsJSONEnv = "SWITCHBOARD_FCM_CREDENTIALS_JSON"

// loadFCMCredentials validates the FCM key from --fcm-credentials-file or
// $SWITCHBOARD_FCM_CREDENTIALS_JSON; nil, nil when neither is set (push
// off). Its errors never quote the key.
func loadFCMCredentials(path string) (*push.Credentials, error) {
	js, haveJSON := os.LookupEnv(credentialsJSONEnv)
	switch {
	case path != "" && haveJSON:
		return nil, fmt.Errorf("set one of --fcm-credentials-file and %s, not both", credentialsJSONEnv)
	case path != "":
		return push.LoadCredentialsFile(path)
	case haveJSON:
		c, err := push.ParseCredentials([]byte(js))
		if err != nil {
			return nil, fmt.Errorf("%s: %v", credentialsJSONEnv, err)
		}
		return c, nil
	}
	return nil, nil
}
