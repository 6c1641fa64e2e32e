package loop

import (
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"syscall"
	"time"

	"switchboard/ratelimit"
)

// Config holds every bound the relay enforces. Zero values are replaced by
// the protocol's defaults in Defaults; Validate refuses the rest.
type Config struct {
	// MaxConnections caps live WebSocket connections, binaries and phones
	// together; an upgrade beyond it is answered 503.
	MaxConnections int
	// PhonesPerServer caps the phones attached to one server-id (4429 beyond).
	PhonesPerServer int
	// MaxMessageBytes is the largest inbound message, after reassembly, from
	// either role; one byte more is closed with 1009.
	MaxMessageBytes int
	// PhoneOutboxBytes is each phone's outbound budget, charged as frame
	// length + OutboxItemOverhead per frame; overflow closes the phone 1011.
	PhoneOutboxBytes int
	// BinaryOutboxBytes is each binary's outbound budget, charged the same
	// way; the phone whose frame would overflow it is closed 1011 (the binary
	// and its other phones are untouched).
	BinaryOutboxBytes int
	// MaxInputBufferBytes bounds the input one connection holds unparsed:
	// read ahead by netpoll, staged, or reassembled. At it the relay stops
	// reading the socket (TCP flow control slows the sender) and starts
	// again once only an incomplete frame is left. Zero means
	// 2 × MaxMessageBytes. It must hold one largest message.
	MaxInputBufferBytes int
	// MemoryBudgetBytes bounds the bytes all connections' buffers hold
	// together (input and outboxes). At 80% of it upgrades are refused 503
	// and large readers pause; at it the largest holder is closed 1013.
	// Zero in a Config turns it off; the command's default is
	// DefaultMemoryBudgetBytes.
	MemoryBudgetBytes int64
	// MaxRequestHeaderBytes bounds the HTTP request head; beyond it 431.
	MaxRequestHeaderBytes int
	// ReadWorkers is how many goroutines run read tasks (parsing and
	// routing what arrived on a socket); read tasks never block, so one per
	// core keeps every core busy. Zero means GOMAXPROCS.
	ReadWorkers int
	// ReadQueueDepth bounds the read tasks waiting for a worker; beyond it a
	// task gets a goroutine of its own (switchboard_read_tasks_spilled_total).
	ReadQueueDepth int
	// ReadStallAfter is how long tasks may wait while every read worker is
	// busy and none takes a task (a peer that never pauses keeps its task,
	// and so a worker, going); after it, new tasks start rescuer goroutines
	// that serve the queue (switchboard_read_task_rescues_total).
	ReadStallAfter time.Duration
	// WriteTimeout bounds how long one flush to a peer may block before the
	// connection is dropped.
	WriteTimeout time.Duration
	// CloseLinger is how long a connection the relay closed waits for the
	// peer's answer (close frame or FIN) before the socket is torn down.
	CloseLinger time.Duration
	// HeartbeatInterval is how often every binary and phone is pinged.
	HeartbeatInterval time.Duration
	// PongTimeout is how long a ping may go unanswered before 1011.
	PongTimeout time.Duration
	// HandshakeTimeout bounds the time from accept to a complete request head.
	HandshakeTimeout time.Duration
	// MessageReadTimeout bounds a message from its first byte to its last.
	MessageReadTimeout time.Duration
	// GracePeriod holds a departed binary's slot (and phones) for a reclaim.
	GracePeriod time.Duration
	// TakeoverTimeout is how long a duplicate claim waits for the holder's pong.
	TakeoverTimeout time.Duration
	// DrainTimeout bounds graceful shutdown's wait for close handshakes.
	DrainTimeout time.Duration
	// BinaryMaxLifetime, when positive, closes each binary connection with
	// 1012 `binary lifetime reached` at a random point in [0.9, 1.1] × this
	// after its claim. The daemon redials through the balancer and lands on
	// the node its server-id hashes to, so pairs split by a node leaving and
	// returning are brought home. Zero (the default) turns it off; a positive
	// value must be at least one second.
	BinaryMaxLifetime time.Duration
	// RateLimitBurst is how many upgrade attempts (/v1/server, /v1/client)
	// one source IP may make at once; each RateLimitInterval gives one back.
	// Over it: 429. Zero (the zero Config) turns the limit off; the command's
	// default is DefaultRateLimitBurst.
	RateLimitBurst int
	// RateLimitInterval is how often a source regains one upgrade attempt.
	RateLimitInterval time.Duration
	// RateLimitMaxSources caps the sources tracked at once (memory stays
	// bounded under a flood of addresses); when full, the tracked source
	// closest to a full bucket is forgotten.
	RateLimitMaxSources int
	// RateLimitIPv6Prefix is how many leading bits of an IPv6 source the
	// rate limit keys on: a host is handed a whole /64 (or more), so keying
	// on the full address would let one client make 2^64 "sources". IPv4
	// sources are always keyed on the full address. Zero means
	// DefaultRateLimitIPv6Prefix.
	RateLimitIPv6Prefix int
	// RateLimitExempt lists source prefixes the per-IP rate limit does not
	// apply to: carrier-grade NAT ranges that put thousands of phones
	// behind one address, or the operator's own monitoring. Everything else
	// (the connection cap, the memory budget) still applies to them.
	RateLimitExempt []netip.Prefix
	// ProxyProtocol requires a PROXY protocol v2 header at the start of every
	// connection and takes the source address from it.
	ProxyProtocol bool
	// TrustXForwardedFor takes the source address from the left-most
	// X-Forwarded-For address when present and parseable. Only for a relay
	// behind a proxy that sets that header itself: clients can forge it.
	TrustXForwardedFor bool
	// Push sends the push wakes binaries ask for (docs/protocol.md, "Push wakes");
	// nil means push is off and every wake is dropped as push_wake_off.
	Push PushWaker
	// Version is reported by /healthz.
	Version string
	// Logger receives connection-level events; nil discards them.
	Logger *slog.Logger
}

// PushWaker is what the relay hands push_wake objects to (package push
// implements it). Wake must not block: it admits or drops at once and sends
// elsewhere. pushWake points into the read buffer and is valid only during
// the call. Outcomes reports each outcome's count for /metrics, by the
// names pyrycode_relay_push_wakes_total uses.
type PushWaker interface {
	Wake(serverID string, pushWake []byte)
	Outcomes(yield func(outcome string, n uint64))
}

// Protocol defaults (docs/protocol.md, "Limits and timers").
const (
	DefaultPhonesPerServer       = 16
	DefaultMaxMessageBytes       = 262144
	DefaultPhoneOutboxBytes      = 4 << 20
	DefaultBinaryOutboxBytes     = 16 << 20 // a binary fans in up to 16 phones: 4 MiB each
	DefaultMaxRequestHeaderBytes = 8192     // real clients send under 1 KiB; 8 KiB is net/http's order of magnitude for one line
	DefaultMemoryBudgetBytes     = 1 << 30  // the command's default: 250 phones' full outboxes, far above any honest load
	DefaultWriteTimeout          = 10 * time.Second
	DefaultCloseLinger           = 5 * time.Second // long enough for a phone on a slow link to answer a close frame
	DefaultRateLimitBurst        = 20              // the command's default; a zero Config leaves the limit off
	DefaultRateLimitInterval     = 6 * time.Second
	DefaultRateLimitMaxSources   = 1 << 20 // ~55 MiB of buckets at most (measured)
	DefaultRateLimitIPv6Prefix   = 64      // the smallest block an ISP hands one subscriber
	DefaultHeartbeatInterval     = 30 * time.Second
	DefaultPongTimeout           = 30 * time.Second
	DefaultHandshakeTimeout      = 5 * time.Second
	DefaultMessageReadTimeout    = 30 * time.Second
	DefaultGracePeriod           = 30 * time.Second
	DefaultTakeoverTimeout       = 10 * time.Second
	DefaultDrainTimeout          = 10 * time.Second
	DefaultReadQueueDepth        = 4096             // several full epoll batches (netpoll takes up to 1,024 events per wait)
	DefaultReadStallAfter        = time.Millisecond // ~10× the longest read task of a default-size (256 KiB) message
	OutboxItemOverhead           = 64               // per-frame charge, as the reference relay counts its queue items
)

// maxFrameHeader is the longest WebSocket frame header a client sends.
const maxFrameHeader = 14

// Upper bounds on the read pool, against typos: more workers than this only
// add goroutines, and the queue holds 8 bytes per slot up front.
const (
	maxReadWorkers    = 1024
	maxReadQueueDepth = 1 << 20
)

// MaxRateLimitExempt bounds RateLimitExempt: every upgrade checks its
// source against each entry in turn, and a thousand prefixes cost about a
// microsecond, the order of the rest of the upgrade's work.
const MaxRateLimitExempt = 1024

// minBinaryLifetime is the shortest BinaryMaxLifetime Validate accepts:
// shorter would have binaries spend more time redialling than connected.
// Tests lower it (export_test.go).
var minBinaryLifetime = time.Second

// Defaults fills zero fields with the protocol's values.
func (c *Config) Defaults() {
	setDefault(&c.PhonesPerServer, DefaultPhonesPerServer)
	setDefault(&c.MaxMessageBytes, DefaultMaxMessageBytes)
	setDefault(&c.PhoneOutboxBytes, DefaultPhoneOutboxBytes)
	setDefault(&c.BinaryOutboxBytes, DefaultBinaryOutboxBytes)
	setDefault(&c.MaxRequestHeaderBytes, DefaultMaxRequestHeaderBytes)
	c.MaxInputBufferBytes = c.inputBuffer()
	setDefault(&c.ReadWorkers, runtime.GOMAXPROCS(0))
	setDefault(&c.ReadQueueDepth, DefaultReadQueueDepth)
	setDefaultDuration(&c.ReadStallAfter, DefaultReadStallAfter)
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	setDefaultDuration(&c.CloseLinger, DefaultCloseLinger)
	setDefaultDuration(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	setDefaultDuration(&c.PongTimeout, DefaultPongTimeout)
	setDefaultDuration(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefaultDuration(&c.MessageReadTimeout, DefaultMessageReadTimeout)
	setDefaultDuration(&c.GracePeriod, DefaultGracePeriod)
	setDefaultDuration(&c.TakeoverTimeout, DefaultTakeoverTimeout)
	setDefaultDuration(&c.DrainTimeout, DefaultDrainTimeout)
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections()
	}
	if c.RateLimitInterval == 0 {
		c.RateLimitInterval = DefaultRateLimitInterval
	}
	setDefault(&c.RateLimitMaxSources, DefaultRateLimitMaxSources)
	setDefault(&c.RateLimitIPv6Prefix, DefaultRateLimitIPv6Prefix)
	if c.Version == "" {
		c.Version = "dev"
	}
}

// inputBuffer is MaxInputBufferBytes with its default filled in: two
// largest messages, so a connection can hold one whole message while the
// next arrives.
func (c *Config) inputBuffer() int {
	if c.MaxInputBufferBytes == 0 {
		return 2 * c.MaxMessageBytes
	}
	return c.MaxInputBufferBytes
}

// Validate returns a one-line reason for the first unusable value.
func (c *Config) Validate() error {
	switch {
	case c.MaxConnections < 1:
		return fmt.Errorf("max-connections must be at least 1, got %d", c.MaxConnections)
	case c.PhonesPerServer < 1:
		return fmt.Errorf("phones-per-server must be at least 1, got %d", c.PhonesPerServer)
	case c.MaxMessageBytes < 125 || c.MaxMessageBytes > 64<<20:
		return fmt.Errorf("max-message-bytes must be in 125..%d, got %d", 64<<20, c.MaxMessageBytes)
	case c.PhoneOutboxBytes < c.MaxMessageBytes+OutboxItemOverhead:
		return fmt.Errorf("phone-outbox-bytes must hold one largest message (%d), got %d", c.MaxMessageBytes+OutboxItemOverhead, c.PhoneOutboxBytes)
	case c.BinaryOutboxBytes < c.MaxMessageBytes+OutboxItemOverhead+256:
		return fmt.Errorf("binary-outbox-bytes must hold one largest envelope (%d), got %d", c.MaxMessageBytes+OutboxItemOverhead+256, c.BinaryOutboxBytes)
	case c.MaxInputBufferBytes != 0 && (c.MaxInputBufferBytes < c.MaxMessageBytes+maxFrameHeader || c.MaxInputBufferBytes > 1<<30):
		return fmt.Errorf("max-input-buffer-bytes must be 0 (2 × max-message-bytes) or in %d (one largest message)..%d, got %d", c.MaxMessageBytes+maxFrameHeader, 1<<30, c.MaxInputBufferBytes)
	case c.MemoryBudgetBytes < 0:
		return fmt.Errorf("memory-budget-bytes must be 0 (off) or positive, got %d", c.MemoryBudgetBytes)
	case c.MemoryBudgetBytes > 0 && c.MemoryBudgetBytes < int64(4*c.inputBuffer()):
		return fmt.Errorf("memory-budget-bytes must be 0 (off) or at least 4 × max-input-buffer-bytes (%d), got %d", 4*c.inputBuffer(), c.MemoryBudgetBytes)
	case c.MaxRequestHeaderBytes < 512:
		return fmt.Errorf("max-request-header-bytes must be at least 512, got %d", c.MaxRequestHeaderBytes)
	case c.ReadWorkers < 0 || c.ReadWorkers > maxReadWorkers:
		return fmt.Errorf("read-workers must be in 0 (one per CPU)..%d, got %d", maxReadWorkers, c.ReadWorkers)
	case c.ReadQueueDepth < 1 || c.ReadQueueDepth > maxReadQueueDepth:
		return fmt.Errorf("read-queue-depth must be in 1..%d, got %d", maxReadQueueDepth, c.ReadQueueDepth)
	case c.ReadStallAfter < 0 || c.ReadStallAfter > time.Second:
		return fmt.Errorf("read-stall-after must be in 0 (default)..1s, got %s", c.ReadStallAfter)
	case c.WriteTimeout <= 0:
		return fmt.Errorf("write-timeout must be positive, got %s", c.WriteTimeout)
	case c.CloseLinger <= 0:
		return fmt.Errorf("close-linger must be positive, got %s", c.CloseLinger)
	case c.RateLimitBurst < 0:
		return fmt.Errorf("rate-limit-burst must be 0 (off) or more, got %d", c.RateLimitBurst)
	case c.RateLimitInterval <= 0:
		return fmt.Errorf("rate-limit-interval must be positive, got %s", c.RateLimitInterval)
	case c.RateLimitBurst > 0 && int64(c.RateLimitBurst) > int64(ratelimit.MaxSpan/c.RateLimitInterval):
		return fmt.Errorf("rate-limit-burst × rate-limit-interval must be at most %s, got %d × %s", ratelimit.MaxSpan, c.RateLimitBurst, c.RateLimitInterval)
	case c.BinaryMaxLifetime < 0:
		return fmt.Errorf("binary-max-lifetime must be 0 (off) or positive, got %s", c.BinaryMaxLifetime)
	case c.BinaryMaxLifetime > 0 && c.BinaryMaxLifetime < minBinaryLifetime:
		return fmt.Errorf("binary-max-lifetime must be 0 (off) or at least %s, got %s", minBinaryLifetime, c.BinaryMaxLifetime)
	case c.RateLimitMaxSources < ratelimit.MinKeys:
		return fmt.Errorf("rate-limit-max-sources must be at least %d, got %d", ratelimit.MinKeys, c.RateLimitMaxSources)
	case c.RateLimitIPv6Prefix < 1 || c.RateLimitIPv6Prefix > 128:
		return fmt.Errorf("rate-limit-ipv6-prefix must be in 1..128, got %d", c.RateLimitIPv6Prefix)
	case len(c.RateLimitExempt) > MaxRateLimitExempt:
		return fmt.Errorf("rate-limit-exempt may list at most %d prefixes, got %d", MaxRateLimitExempt, len(c.RateLimitExempt))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"heartbeat-interval", c.HeartbeatInterval}, {"pong-timeout", c.PongTimeout},
		{"handshake-timeout", c.HandshakeTimeout}, {"message-read-timeout", c.MessageReadTimeout},
		{"grace-period", c.GracePeriod}, {"takeover-timeout", c.TakeoverTimeout}, {"drain-timeout", c.DrainTimeout},
	} {
		if d.v <= 0 {
			return fmt.Errorf("%s must be positive, got %s", d.name, d.v)
		}
	}
	return nil
}

func setDefaultDuration(v *time.Duration, d time.Duration) {
	if *v == 0 {
		*v = d
	}
}

func setDefault(v *int, d int) {
	if *v == 0 {
		*v = d
	}
}

// fdHeadroom is kept back from the open-file limit for the listener, the
// admin listener, logs, and connections still in their handshake.
const fdHeadroom = 256

// DefaultMaxConnections derives the connection cap from the process's
// open-file limit: every connection is one descriptor, and the relay must
// keep some for everything else or accept() starts failing for all.
func DefaultMaxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 1024
	}
	n := int(min(rl.Cur, 1<<30))
	head := max(fdHeadroom, n/10)
	if n-head < 1 {
		return 1
	}
	return n - head
}
