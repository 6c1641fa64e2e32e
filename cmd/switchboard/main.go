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
	ln, err := net.Listen("tcp", opts.listen)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard: listen: %v\n", err)
		return 1
	}
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
	log.Info("listening", "addr", ln.Addr().String(), "version", version,
		"max_connections", cfg.MaxConnections, "phones_per_server", cfg.PhonesPerServer,
		"max_message_bytes", cfg.MaxMessageBytes, "max_input_buffer_bytes", cfg.MaxInputBufferBytes,
		"memory_budget_bytes", cfg.MemoryBudgetBytes, "rate_limit_burst", cfg.RateLimitBurst,
		"rate_limit_interval", cfg.RateLimitInterval, "proxy_protocol", cfg.ProxyProtocol,
		"trust_x_forwarded_for", cfg.TrustXForwardedFor, "binary_max_lifetime", cfg.BinaryMaxLifetime,
		"push", creds != nil)

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
	// Shutdown bounds itself by --drain-timeout.
	if err := srv.Shutdown(context.Background()); err != nil {
		log.Warn("shutdown", "err", err)
	}
	log.Info("stopped")
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
	fs.IntVar(&o.cfg.MaxInputBufferBytes, "max-input-buffer-bytes", 0,
		"unparsed input one connection may hold; at it the relay stops reading that socket (TCP slows the sender) and reads it only as fast as it parses from then on; 0 means 2 × --max-message-bytes")
	fs.Int64Var(&o.cfg.MemoryBudgetBytes, "memory-budget-bytes", loop.DefaultMemoryBudgetBytes,
		"bytes all connection buffers (input and outboxes) may hold together; at 80% upgrades get 503 and large readers pause, at 100% the largest holder is closed 1013; 0 turns it off")
	fs.IntVar(&o.cfg.MaxRequestHeaderBytes, "max-request-header-bytes", loop.DefaultMaxRequestHeaderBytes, "largest HTTP request head; larger gets 431")
	fs.IntVar(&o.cfg.ReadWorkers, "read-workers", 0, "goroutines that parse and route what arrives on sockets (read tasks never block); 0 means one per CPU (GOMAXPROCS)")
	fs.IntVar(&o.cfg.ReadQueueDepth, "read-queue-depth", loop.DefaultReadQueueDepth, "read tasks that may wait for a read worker; beyond it a task runs on a goroutine of its own (switchboard_read_tasks_spilled_total)")
	fs.DurationVar(&o.cfg.ReadStallAfter, "read-stall-after", loop.DefaultReadStallAfter, "when every read worker has been busy this long with tasks waiting (a peer that sends without pause), new tasks start rescuer goroutines that serve the queue; at most 1s")
	fs.DurationVar(&o.cfg.WriteTimeout, "write-timeout", loop.DefaultWriteTimeout, "how long a write to one peer may block before that peer is dropped")
	fs.DurationVar(&o.cfg.CloseLinger, "close-linger", loop.DefaultCloseLinger, "how long a closed connection waits for the peer's close answer")
	fs.DurationVar(&o.cfg.HeartbeatInterval, "heartbeat-interval", loop.DefaultHeartbeatInterval, "how often every binary and phone is pinged")
	fs.DurationVar(&o.cfg.PongTimeout, "pong-timeout", loop.DefaultPongTimeout, "how long a ping may go unanswered before 1011 heartbeat timeout")
	fs.DurationVar(&o.cfg.HandshakeTimeout, "handshake-timeout", loop.DefaultHandshakeTimeout, "time from connect to a complete request head; later, the connection is dropped")
	fs.DurationVar(&o.cfg.MessageReadTimeout, "message-read-timeout", loop.DefaultMessageReadTimeout, "time from a message's first byte to its last; later, 1008")
	fs.DurationVar(&o.cfg.GracePeriod, "grace-period", loop.DefaultGracePeriod, "how long a departed binary's server-id and phones are held for it to reclaim")
	fs.DurationVar(&o.cfg.TakeoverTimeout, "takeover-timeout", loop.DefaultTakeoverTimeout, "how long a duplicate claim waits for the holder's pong before taking over")
	fs.DurationVar(&o.cfg.DrainTimeout, "drain-timeout", loop.DefaultDrainTimeout, "on SIGTERM/SIGINT, how long to wait for close handshakes after 1001")
	fs.DurationVar(&o.cfg.BinaryMaxLifetime, "binary-max-lifetime", 0, "close each binary connection with 1012 at a random point in [0.9, 1.1] × this after its claim, so it redials through the balancer to its home node; 0 turns it off, else at least 1s")
	fs.IntVar(&o.cfg.RateLimitBurst, "rate-limit-burst", loop.DefaultRateLimitBurst, "upgrade attempts one source IP may make at once on /v1/server and /v1/client (one more per --rate-limit-interval); beyond it 429; 0 turns the limit off")
	fs.DurationVar(&o.cfg.RateLimitInterval, "rate-limit-interval", loop.DefaultRateLimitInterval, "how often a source IP regains one upgrade attempt")
	fs.IntVar(&o.cfg.RateLimitMaxSources, "rate-limit-max-sources", loop.DefaultRateLimitMaxSources, "source IPs the rate limit tracks at once; when full, the one nearest a full bucket is forgotten")
	fs.BoolVar(&o.cfg.ProxyProtocol, "proxy-protocol", false, "require a PROXY protocol v2 header on every connection and take the source IP from it")
	fs.BoolVar(&o.cfg.TrustXForwardedFor, "trust-x-forwarded-for", false, "take the source IP from the left-most X-Forwarded-For address (only behind a proxy that sets it)")
	fs.StringVar(&o.fcmCreds, "fcm-credentials-file", "", "FCM service-account JSON key; turns push wakes on (else every wake is dropped). The key itself may instead be given in $SWITCHBOARD_FCM_CREDENTIALS_JSON")
	fs.StringVar(&o.fcmURL, "fcm-endpoint", push.DefaultEndpoint, "FCM HTTP v1 base URL")
	fs.StringVar(&o.fcmToken, "fcm-token-url", "", "OAuth2 token endpoint for the FCM key (default: the key's token_uri)")
	fs.StringVar(&o.admin, "admin-listen", "127.0.0.1:9412", "admin listener for operator endpoints (/metrics, pprof); empty disables it")
	fs.BoolVar(&o.pprof, "pprof", false, "serve net/http/pprof under /debug/pprof/ on the admin listener")
	fs.StringVar(&o.adminTLS[0], "admin-tls-cert-file", "", "PEM certificate (chain) for the admin listener; with --admin-tls-key-file it serves HTTPS")
	fs.StringVar(&o.adminTLS[1], "admin-tls-key-file", "", "PEM private key for --admin-tls-cert-file")
	fs.StringVar(&o.adminAuth, "admin-basic-auth-file", "", "file of user:bcrypt-hash lines, read at start; the admin listener then requires HTTP basic auth (401 otherwise)")
	fs.StringVar(&o.logLvl, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.logFmt, "log-format", "text", "log format: text (logfmt) or json")
	fs.BoolVar(&o.production, "production", false, "refuse to start as root or with capabilities beyond binding low ports")
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
