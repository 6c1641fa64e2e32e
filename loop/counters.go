package loop

import (
	"fmt"
	"sync/atomic"
)

// DropReason names why a frame or envelope was not delivered. Every drop is
// counted under exactly one reason.
type DropReason int

const (
	DropBadEnvelope      DropReason = iota // binary sent something that is not a valid envelope
	DropUnknownConnID                      // envelope names no live phone of that binary's server-id
	DropPhoneClosing                       // target phone is already closing or gone
	DropPushWakeOff                        // push_wake asked for, push is not configured
	DropBinaryGone                         // phone sent while its server-id has no live binary
	DropBinaryBacklog                      // binary's outbox was full; the sending phone is closed
	DropPhoneBacklog                       // phone's outbox overflowed: the frame that did not fit (those queued before it: DropDiscardedOnClose)
	DropCloseNoticeLost                    // a close notice not queued: its binary's outbox is closed (gone, in grace, closing) or past noticeSlack
	DropPongOverflow                       // a pong did not fit in the outbox's budget plus controlSlack
	DropPingOverflow                       // a heartbeat ping did not fit in the outbox's budget plus controlSlack
	DropDiscardedOnClose                   // queued but never written: the connection closed, or a final frame superseded it
	numDropReasons
)

var dropReasonNames = [numDropReasons]string{
	DropBadEnvelope:      "bad_envelope",
	DropUnknownConnID:    "unknown_conn_id",
	DropPhoneClosing:     "phone_closing",
	DropPushWakeOff:      "push_wake_off",
	DropBinaryGone:       "binary_gone",
	DropBinaryBacklog:    "binary_backlog_full",
	DropPhoneBacklog:     "phone_backlog_full",
	DropCloseNoticeLost:  "close_notice_lost",
	DropPongOverflow:     "pong_overflow",
	DropPingOverflow:     "ping_overflow",
	DropDiscardedOnClose: "discarded_on_close",
}

func (r DropReason) String() string { return dropReasonNames[r] }

// CloseReason names why the relay ended a connection.
type CloseReason int

const (
	ClosePeer             CloseReason = iota // peer sent a close frame or dropped TCP
	CloseProtocol                            // WebSocket protocol violation (1002)
	CloseTooBig                              // message over the limit (1009)
	CloseNotJSON                             // phone message not one JSON value (1000)
	CloseBinaryGone                          // phone sent while its binary was gone (1000)
	CloseBinaryAsked                         // binary's close directive
	CloseBinaryBacklog                       // binary's outbox full, the sending phone closed (1011)
	ClosePhoneBacklog                        // phone's outbox overflowed (1011)
	CloseWriteFailed                         // a write to the peer failed or timed out
	CloseReclaimed                           // server-id moved to a new binary (4404)
	CloseRegistry                            // refused by the registry after the 101 (4404/4409/4429)
	CloseShutdown                            // relay shutting down (1001)
	CloseHandshakeTimeout                    // request head not complete in time (dropped)
	CloseReadTimeout                         // a started message not complete in time (1008)
	CloseHeartbeat                           // no pong in time (1011)
	CloseTakenOver                           // binary displaced by a takeover (1011)
	CloseGraceExpired                        // phone of a slot whose grace ran out (1000)
	CloseLifetime                            // binary reached --binary-max-lifetime (1012)
	CloseMemoryBudget                        // largest buffer holder when the relay reached --memory-budget-bytes (1013)
	ClosePauseFailed                         // a paused socket could not wait for input (epoll refused it; dropped)
	numCloseReasons
)

var closeReasonNames = [numCloseReasons]string{
	ClosePeer:             "peer",
	CloseProtocol:         "protocol_error",
	CloseTooBig:           "too_big",
	CloseNotJSON:          "not_json",
	CloseBinaryGone:       "binary_gone",
	CloseBinaryAsked:      "binary_asked",
	CloseBinaryBacklog:    "binary_backlog_full",
	ClosePhoneBacklog:     "phone_backlog_full",
	CloseWriteFailed:      "write_failed",
	CloseReclaimed:        "reclaimed",
	CloseRegistry:         "registry_refused",
	CloseShutdown:         "shutdown",
	CloseHandshakeTimeout: "handshake_timeout",
	CloseReadTimeout:      "read_timeout",
	CloseHeartbeat:        "heartbeat_timeout",
	CloseTakenOver:        "taken_over",
	CloseGraceExpired:     "grace_expired",
	CloseLifetime:         "lifetime",
	CloseMemoryBudget:     "memory_budget",
	ClosePauseFailed:      "pause_failed",
}

func (r CloseReason) String() string { return closeReasonNames[r] }

// RejectReason names why an HTTP request was answered without an upgrade.
type RejectReason int

const (
	RejectHeaders        RejectReason = iota // required pyrycode header missing or empty (400)
	RejectServerID                           // server-id out of bounds (400)
	RejectMalformed                          // not parseable HTTP/1.1 (400)
	RejectHeaderSize                         // request head over the limit (431)
	RejectNotUpgrade                         // no WebSocket upgrade headers (426)
	RejectMethod                             // not GET (405)
	RejectNotFound                           // unknown path (404)
	RejectCapacity                           // max-connections reached (503)
	RejectDraining                           // relay shutting down (503)
	RejectRateLimit                          // source over its upgrade rate limit (429)
	RejectBadProxyHeader                     // PROXY v2 header missing or bad (closed, nothing answered)
	RejectOverloaded                         // relay's buffers past the memory budget's high mark (503)
	numRejectReasons
)

var rejectReasonNames = [numRejectReasons]string{
	RejectHeaders:        "missing_header",
	RejectServerID:       "bad_server_id",
	RejectMalformed:      "malformed_request",
	RejectHeaderSize:     "header_too_large",
	RejectNotUpgrade:     "not_upgrade",
	RejectMethod:         "bad_method",
	RejectNotFound:       "not_found",
	RejectCapacity:       "at_capacity",
	RejectDraining:       "draining",
	RejectRateLimit:      "rate_limited",
	RejectBadProxyHeader: "bad_proxy_header",
	RejectOverloaded:     "overloaded",
}

func (r RejectReason) String() string { return rejectReasonNames[r] }

// UpgradeOutcome is what became of an upgrade attempt on /v1/server or
// /v1/client, labelled as the reference relay's
// pyrycode_relay_ws_upgrade_attempts_total labels it (plus two outcomes the
// reference has no label for).
type UpgradeOutcome int

const (
	UpgradeAccept           UpgradeOutcome = iota // registered
	UpgradeRejectHeaders                          // 400: missing/empty header, bad server-id, malformed, wrong method
	UpgradeReject409                              // 4409: server-id claimed by a live binary
	UpgradeReject404                              // 4404: no binary for the phone's server-id
	UpgradeReject429                              // 4429: phones at the cap
	UpgradeRejectRateLimit                        // 429: source IP over its rate
	UpgradeRejectNotUpgrade                       // 426: no WebSocket upgrade headers
	UpgradeRejectCapacity                         // 503: connection cap or draining
	numUpgradeOutcomes
)

var upgradeOutcomeNames = [numUpgradeOutcomes]string{
	UpgradeAccept:           "accept",
	UpgradeRejectHeaders:    "reject_headers",
	UpgradeReject409:        "reject_409",
	UpgradeReject404:        "reject_404",
	UpgradeReject429:        "reject_429",
	UpgradeRejectRateLimit:  "reject_rate_limit",
	UpgradeRejectNotUpgrade: "reject_not_upgrade",
	UpgradeRejectCapacity:   "reject_capacity",
}

func (o UpgradeOutcome) String() string { return upgradeOutcomeNames[o] }

// Every reason is a metric label (metrics.go iterates the names), so a
// reason added without a name, or with another's name, would export an
// empty or a duplicate series. The relay refuses to start instead.
func init() {
	if err := checkReasonNames(); err != nil {
		panic(err)
	}
}

func checkReasonNames() error {
	for _, set := range [...]struct {
		kind  string
		names []string
	}{
		{"DropReason", dropReasonNames[:]},
		{"CloseReason", closeReasonNames[:]},
		{"RejectReason", rejectReasonNames[:]},
		{"UpgradeOutcome", upgradeOutcomeNames[:]},
		{"PauseReason", pauseNames[:]},
		{"Endpoint", endpointNames[:]},
	} {
		if err := checkNames(set.kind, set.names); err != nil {
			return err
		}
	}
	return nil
}

// checkNames requires every name to be non-empty and distinct.
func checkNames(kind string, names []string) error {
	seen := make(map[string]int, len(names))
	for i, n := range names {
		if n == "" {
			return fmt.Errorf("loop: %s %d has no metric name", kind, i)
		}
		if j, dup := seen[n]; dup {
			return fmt.Errorf("loop: %s %d and %d share the metric name %q", kind, j, i, n)
		}
		seen[n] = i
	}
	return nil
}

// Endpoint is one of the two upgrade paths; it indexes Counters.Upgrades.
type Endpoint int

const (
	EndpointServer Endpoint = iota // /v1/server: binaries
	EndpointClient                 // /v1/client: phones
	numEndpoints
)

var endpointNames = [numEndpoints]string{EndpointServer: "server", EndpointClient: "client"}

func (e Endpoint) String() string { return endpointNames[e] }

// Counters is the relay's running tally. Fields are updated with atomics on
// the hot path and read by the metrics exporter and by tests.
type Counters struct {
	Drops             [numDropReasons]atomic.Uint64
	Closes            [numCloseReasons]atomic.Uint64
	Rejects           [numRejectReasons]atomic.Uint64
	PhoneToBinary     atomic.Uint64 // envelopes queued towards binaries
	BinaryToPhone     atomic.Uint64 // frames queued towards phones
	UpgradesAccepted  atomic.Uint64
	Upgrades          [numEndpoints][numUpgradeOutcomes]atomic.Uint64
	GraceExpiries     atomic.Uint64 // grace windows that ended unclaimed
	TakeoverProbes    atomic.Uint64 // duplicate claims that pinged the holder
	Takeovers         atomic.Uint64 // probes the holder did not answer: slot moved
	RegistryNoServer  atomic.Uint64
	RegistryClaimed   atomic.Uint64
	RegistryPhonesCap atomic.Uint64
	OutboxBytesQueued atomic.Int64                   // bytes charged to all outboxes right now
	StagedBytes       atomic.Int64                   // bytes of incomplete frames and messages held right now
	WritersActive     atomic.Int64                   // outbox writers running right now
	Flushes           atomic.Uint64                  // writev calls by outbox writers
	FramesFlushed     atomic.Uint64                  // frames those calls carried: / Flushes = coalescing
	WriteWaits        atomic.Uint64                  // writes that found the socket full and waited for room
	UnreadBytes       atomic.Int64                   // input netpoll has read and the read side has not taken yet
	Pauses            [numPauseReasons]atomic.Uint64 // sockets taken out of netpoll's reading, by reason (once per connection)
	DirectReadBytes   atomic.Uint64                  // bytes the relay read itself from paused sockets
	PausedNow         atomic.Int64                   // sockets paused right now
	Parks             atomic.Uint64                  // phones that stopped reading until their binary's outbox drained
	RateLimitExempt   atomic.Uint64                  // upgrade attempts the per-IP limit let through because their source is exempt

	outboxWait  histogram               // per frame: push to the start of its writev (latency.go)
	upgradeTime [numEndpoints]histogram // per attempt: head's first byte to its 101 or refusal written
}

// Drop returns how many frames were dropped for reason r.
func (c *Counters) Drop(r DropReason) uint64 { return c.Drops[r].Load() }

// Close returns how many connections the relay closed for reason r.
func (c *Counters) Close(r CloseReason) uint64 { return c.Closes[r].Load() }

// Paused returns how many times a socket's reading paused for reason r.
func (c *Counters) Paused(r PauseReason) uint64 { return c.Pauses[r].Load() }

// Reject returns how many requests were refused for reason r.
func (c *Counters) Reject(r RejectReason) uint64 { return c.Rejects[r].Load() }
