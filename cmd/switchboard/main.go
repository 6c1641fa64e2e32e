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
	"syscall"
	"time"

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
	// upgradeTimeout bounds a successor's start (--upgrade-timeout);
	// upgradeFD, when not 0, makes this process one (--upgrade-fd).
	upgradeTimeout time.Duration
	upgradeFD      int
}

func run(args []string, stdout, stderr io.Writer) int {
	// Signals are caught before anything else, so a SIGHUP during start-up
	// does not kill the relay either.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sig)
	// Before anything can replace the file: the path, not the inode, is
	// what a live upgrade starts.
	me, selfErr := recordSelf(args)
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
	// A successor takes its listeners from the process it upgrades;
	// anything that fails from here on exits, and the old process, which
	// never stopped accepting, keeps serving (upgrade.go).
	var pred *predecessor
	if opts.upgradeFD != 0 {
		if pred, err = takeOver(opts, log); err != nil {
			fmt.Fprintf(stderr, "switchboard: upgrade: %v\n", err)
			return 1
		}
		defer pred.close()
	}
	// A well-formed address that cannot be bound (in use, not ours, a
	// socket file a live relay holds) exits 1, not 2: the port may come
	// free, so systemd should try again.
	var mainLn net.Listener
	if pred != nil {
		mainLn = pred.main
	} else if mainLn, err = listen(opts.listen); err != nil {
		fmt.Fprintf(stderr, "switchboard: listen: %v\n", err)
		return 1
	}
	// Shutdown closes it; this covers the exits before that. Closing a unix
	// listener removes its socket file, unless a successor serves it
	// (handofflisten.go) or this process is a successor not yet confirmed.
	defer mainLn.Close()
	ln, err := newHandoffListener(mainLn)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard: listen: %v\n", err)
		return 1
	}
	var adminLn net.Listener
	stopAdmin := func() {}
	if opts.admin != "" {
		admin, err := loadAdmin(adminConfig{addr: opts.admin, pprof: opts.pprof,
			tlsCertFile: opts.adminTLS[0], tlsKeyFile: opts.adminTLS[1], basicAuthFile: opts.adminAuth})
		if err != nil {
			fmt.Fprintf(stderr, "switchboard: %v\n", err)
			return 2
		}
		if pred != nil && pred.admin != nil {
			adminLn, pred.admin = pred.admin, nil
		} else if adminLn, err = net.Listen("tcp", opts.admin); err != nil {
			fmt.Fprintf(stderr, "switchboard: admin listen: %v\n", err)
			return 1
		}
		addr, stop := admin.serveOn(adminLn, srv)
		stopAdmin = stop
		defer func() { stopAdmin() }()
		log.Info("admin listening", "addr", addr.String(), "pprof", opts.pprof, "tls", admin.tls != nil, "basic_auth", admin.auth != nil)
	}
	cfg := srv.Config()
	log.Info("listening", "addr", listenAddr(ln), "version", version,
		"max_connections", cfg.MaxConnections, "phones_per_server", cfg.PhonesPerServer,
		"max_message_bytes", cfg.MaxMessageBytes, "max_input_buffer_bytes", cfg.MaxInputBufferBytes,
		"memory_budget_bytes", cfg.MemoryBudgetBytes, "rate_limit_burst", cfg.RateLimitBurst,
		"rate_limit_interval", cfg.RateLimitInterval, "proxy_protocol", cfg.ProxyProtocol,
		"trust_x_forwarded_for", cfg.TrustXForwardedFor, "binary_max_lifetime", cfg.BinaryMaxLifetime,
		"push", creds != nil, "pid", os.Getpid(), "upgraded_from", pred.fromPID())

	if pred != nil {
		n, err := pred.adopt(srv, opts.upgradeTimeout)
		if err != nil {
			_ = sendAnswer(pred.conn, answer{Error: err.Error()})
			fmt.Fprintf(stderr, "switchboard: upgrade: %v\n", err)
			return 1
		}
		log.Info("connections adopted", "connections", n, "upgraded_from", pred.fromPID())
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if pred != nil {
		if err := pred.ready(ln, srv, opts.upgradeTimeout); err != nil {
			fmt.Fprintf(stderr, "switchboard: upgrade: %v; exiting without reading them\n", err)
			return 1
		}
	} else if err := sdNotify("READY=1"); err != nil {
		log.Warn("service manager not told", "err", err)
	}
	up := &upgrader{me: me, srv: srv, selfErr: selfErr, main: ln, admin: adminLn, timeout: opts.upgradeTimeout, log: log,
		done: make(chan upgradeResult, 1)}
	upgraded, err := waitForStop(sig, served, up)
	if err != nil {
		log.Error("serve failed", "err", err)
		return 1
	}
	if upgraded {
		// The successor serves both listeners now; this process closes
		// its own descriptors of them, which leaves the sockets open,
		// and drains its connections as on SIGTERM. Not waited for: while
		// the successor took the admin socket over (net.FileListener) it
		// was in blocking mode for a moment, and an accept of ours caught
		// in that moment returns only with the next connection; the drain
		// must not wait on it, and the exit ends it.
		go stopAdmin()
		stopAdmin = func() {}
	} else {
		up.abandon()
	}
	// Shutdown bounds itself by --drain-timeout.
	if err := srv.Shutdown(context.Background()); err != nil {
		log.Warn("shutdown", "err", err)
	}
	log.Info("stopped")
	return 0
}

// waitForStop returns when SIGTERM or SIGINT arrives (false, nil), an
// upgrade's successor serves the listeners (true, nil) or Serve ends (its
// error). SIGUSR2 starts an upgrade (upgrader.go). SIGHUP is logged and
// otherwise ignored: its default action would kill the relay without a
// close frame, and systemd's Restart=on-failure counts death by SIGHUP as
// a clean exit and leaves the node down. A terminal closing, or a reload
// sent by habit, must not take down every connection.
func waitForStop(sig <-chan os.Signal, served <-chan error, up *upgrader) (bool, error) {
	for {
		select {
		case s := <-sig:
			switch s {
			case syscall.SIGHUP:
				up.log.Warn("signal ignored", "signal", "SIGHUP", "why", "it has no meaning for the relay; SIGTERM drains and stops it, SIGUSR2 upgrades it")
				continue
			case syscall.SIGUSR2:
				up.begin()
				continue
			}
			up.log.Info("stopping", "signal", s.String())
			return false, nil
		case res := <-up.done:
			if up.finish(res) {
				return true, nil
			}
		case err := <-served:
			return false, err
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
