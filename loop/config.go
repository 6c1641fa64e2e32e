package loop

import (
	"fmt"
	"log/slog"
	"time"
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
	// MaxRequestHeaderBytes bounds the HTTP request head; beyond it 431.
	MaxRequestHeaderBytes int
	// WriteTimeout bounds how long one flush to a peer may block before the
	// connection is dropped.
	WriteTimeout time.Duration
	// CloseLinger is how long a connection the relay closed waits for the
	// peer's answer (close frame or FIN) before the socket is torn down.
	CloseLinger time.Duration
	// Version is reported by /healthz.
	Version string
	// Logger receives connection-level events; nil discards them.
	Logger *slog.Logger
}

// Protocol defaults (PROTOCOL.md section 7).
const (
	DefaultPhonesPerServer       = 16
	DefaultMaxMessageBytes       = 262144
	DefaultPhoneOutboxBytes      = 4 << 20
	DefaultBinaryOutboxBytes     = 16 << 20 // a binary fans in up to 16 phones: 4 MiB each
	DefaultMaxRequestHeaderBytes = 8192     // real clients send under 1 KiB; 8 KiB is net/http's order of magnitude for one line
	DefaultWriteTimeout          = 10 * time.Second
	DefaultCloseLinger           = 5 * time.Second // long enough for a phone on a slow link to answer a close frame
	OutboxItemOverhead           = 64              // per-frame charge, as the reference relay counts its queue items
)

// Defaults fills zero fields with the protocol's values.
func (c *Config) Defaults() {
	setDefault(&c.PhonesPerServer, DefaultPhonesPerServer)
	setDefault(&c.MaxMessageBytes, DefaultMaxMessageBytes)
	setDefault(&c.PhoneOutboxBytes, DefaultPhoneOutboxBytes)
	setDefault(&c.BinaryOutboxBytes, DefaultBinaryOutboxBytes)
	setDefault(&c.MaxRequestHeaderBytes, DefaultMaxRequestHeaderBytes)
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.CloseLinger == 0 {
		c.CloseLinger = DefaultCloseLinger
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections()
	}
	if c.Version == "" {
		c.Version = "dev"
	}
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
	case c.MaxRequestHeaderBytes < 512:
		return fmt.Errorf("max-request-header-bytes must be at least 512, got %d", c.MaxRequestHeaderBytes)
	case c.WriteTimeout <= 0:
		return fmt.Errorf("write-timeout must be positive, got %s", c.WriteTimeout)
	case c.CloseLinger <= 0:
		return fmt.Errorf("close-linger must be positive, got %s", c.CloseLinger)
	}
	return nil
}

func setDefault(v *int, d int) {
	if *v == 0 {
		*v = d
	}
}
