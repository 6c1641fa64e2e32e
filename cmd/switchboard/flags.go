package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"

	"switchboard/loop"
	"switchboard/push"
)

// envPrefix starts every environment variable the relay reads.
const envPrefix = "SWITCHBOARD_"

// flagOnly names the flags that have no environment variable: an
// environment file that sets SWITCHBOARD_VERSION would turn a service into
// one that prints its version and exits 0 at every start.
// --upgrade-fd is internal, set by a relay on the successor it starts: from
// an environment file it would make every start wait for a hello on a
// descriptor nobody wrote to.
var flagOnly = map[string]bool{"version": true, upgradeFDFlag: true}

// envName is the variable that sets a flag: SWITCHBOARD_ and the flag's
// name in upper case with dashes as underscores.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags reads flags, each also settable as SWITCHBOARD_<FLAG_NAME>
// (a flag on the command line wins), from args and environ. Every error is
// one line; --help writes the flag list to help and returns flag.ErrHelp.
func parseFlags(args, environ []string, help io.Writer) (*options, error) {
	o := &options{}
	fs := newFlagSet(o)
	fs.SetOutput(io.Discard) // the flag package would print the whole list after every mistake
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(help)
			fmt.Fprintln(help, "Usage: switchboard [flags]\nEvery flag may instead be set as "+envPrefix+"<FLAG_NAME> in the environment; the command line wins.")
			fs.PrintDefaults()
			return nil, err
		}
		return nil, fmt.Errorf("%v (switchboard --help lists the flags)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := applyEnvironment(fs, environ); err != nil {
		return nil, err
	}
	if err := checkMainListen(o.listen, o.cfg.ProxyProtocol); err != nil {
		return nil, err
	}
	if o.upgradeTimeout <= 0 {
		return nil, fmt.Errorf("invalid --upgrade-timeout %v: a successor needs some time to start, e.g. 10s", o.upgradeTimeout)
	}
	if o.upgradeFD < 0 || o.upgradeFD > 0 && o.upgradeFD <= 2 {
		return nil, fmt.Errorf("invalid --%s %d: it is set by a relay on its successor, never by hand", upgradeFDFlag, o.upgradeFD)
	}
	if o.admin != "" {
		if err := checkListenAddr("admin-listen", o.admin); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// applyEnvironment sets every flag not given on the command line from its
// variable, and refuses a SWITCHBOARD_ variable that sets nothing: a
// misspelt name would otherwise leave its default in force without a word.
func applyEnvironment(fs *flag.FlagSet, environ []string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	known := map[string]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) {
		if !flagOnly[f.Name] {
			known[envName(f.Name)] = f
		}
	})
	names := make([]string, 0, len(known)+1)
	for name := range known {
		names = append(names, name)
	}
	names = append(names, credentialsJSONEnv)
	vars := slices.Clone(environ)
	slices.Sort(vars) // the first mistake reported is the same every run
	for _, kv := range vars {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) || name == credentialsJSONEnv {
			continue
		}
		f, ok := known[name]
		if !ok {
			if flagName := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, envPrefix), "_", "-")); flagOnly[flagName] {
				return fmt.Errorf("%s is not read: --%s is a command-line flag only", name, flagName)
			}
			return fmt.Errorf("unknown environment variable %s (did you mean %s?)", name, closest(name, names))
		}
		if given[f.Name] {
			continue
		}
		if err := f.Value.Set(value); err != nil {
			return fmt.Errorf("invalid value %q for %s: %v", value, name, err)
		}
	}
	return nil
}

// checkListenAddr refuses an address net.Listen could never bind, so a
// typo is a configuration error (exit 2) rather than a failed start.
func checkListenAddr(flagName, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = net.LookupPort("tcp", port)
	}
	if err != nil {
		return fmt.Errorf("invalid --%s %q: want host:port, e.g. :8080 or 127.0.0.1:9412 (%v)", flagName, addr, err)
	}
	return nil
}

// checkMainListen checks --listen: host:port, or unix:/path with
// --proxy-protocol. A unix socket's peer has no address, so without the
// PROXY header every phone would share one rate-limit bucket and every log
// line the same remote.
func checkMainListen(addr string, proxyProtocol bool) error {
	path, ok := unixPath(addr)
	if !ok {
		return checkListenAddr("listen", addr)
	}
	if err := checkUnixPath(path); err != nil {
		return err
	}
	if !proxyProtocol {
		return fmt.Errorf("--listen %s needs --proxy-protocol: a unix socket carries no client address, so the balancer must send it in a PROXY v2 header (HAProxy send-proxy-v2)", addr)
	}
	return nil
}

// closest is the candidate that starts with name (a name cut short), else
// the one with the fewest single-character edits from it.
func closest(name string, candidates []string) string {
	best, bestDist := "", -1
	for _, c := range candidates {
		d := editDistance(name, c)
		if strings.HasPrefix(c, name) {
			d = 0
		}
		if bestDist < 0 || d < bestDist || d == bestDist && c < best {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// prefixList is a comma-separated list of CIDR prefixes as a flag; a bare
// address stands for itself alone (/32 or /128).
type prefixList struct{ p *[]netip.Prefix }

func (l prefixList) String() string {
	if l.p == nil {
		return ""
	}
	s := make([]string, len(*l.p))
	for i, p := range *l.p {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (l prefixList) Set(v string) error {
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return fmt.Errorf("%q is neither a CIDR prefix nor an address", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			return fmt.Errorf("%q: write IPv4 prefixes in IPv4 form", f)
		}
		out = append(out, p.Masked())
	}
	*l.p = out
	return nil
}

// newFlagSet declares every flag, writing into o.
func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("switchboard", flag.ContinueOnError)
	fs.StringVar(&o.listen, "listen", ":8080", "main listener address (WebSocket endpoints and /healthz): host:port, or unix:/path for a balancer on the same box (needs --proxy-protocol)")
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
	fs.IntVar(&o.cfg.RateLimitIPv6Prefix, "rate-limit-ipv6-prefix", loop.DefaultRateLimitIPv6Prefix, "an IPv6 source is rate limited by its first this-many bits (one subscriber holds a whole /64); 128 limits each address alone")
	fs.Var(prefixList{&o.cfg.RateLimitExempt}, "rate-limit-exempt", fmt.Sprintf("comma-separated CIDR prefixes (or addresses) the per-IP rate limit does not apply to, e.g. a carrier's NAT range; at most %d", loop.MaxRateLimitExempt))
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
	fs.DurationVar(&o.upgradeTimeout, "upgrade-timeout", defaultUpgradeTimeout, "on SIGUSR2 (systemctl reload), how long the successor may take to start and take the listeners; past it the relay kills it and keeps serving")
	fs.IntVar(&o.upgradeFD, upgradeFDFlag, 0, "internal: the handover socket a relay passes the successor it starts on SIGUSR2; never set it by hand (a flag only)")
	fs.StringVar(&o.logLvl, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.logFmt, "log-format", "text", "log format: text (logfmt) or json")
	fs.BoolVar(&o.production, "production", false, "refuse to start as root or with capabilities beyond binding low ports")
	fs.BoolVar(&o.showVer, "version", false, "print the version and exit (a flag only: no environment variable)")
	return fs
}
