package loop

import (
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"
	"github.com/valyala/bytebufferpool"

	"switchboard/envelope"
)

type role uint8

const (
	roleNone role = iota
	roleBinary
	rolePhone
)

func (r role) String() string {
	switch r {
	case roleBinary:
		return "binary"
	case rolePhone:
		return "phone"
	}
	return "none"
}

// LogValue makes both log formats print the role as its name: the JSON
// handler would otherwise write the number.
func (r role) LogValue() slog.Value { return slog.StringValue(r.String()) }

// conn is the relay's state for one TCP connection. It doubles as the
// context netpoll hands back to every callback, so finding it costs a type
// assertion rather than a map lookup.
type conn struct {
	srv *Server
	// nc is netpoll's connection for the socket; once a pause has taken the
	// socket out of netpoll (pause.go) it is closed and only its addresses
	// are read. Other goroutines use fd, or reach nc through closeSocket,
	// which uses it only while the socket is live.
	nc  netpoll.Connection
	out outbox

	// Read side: touched only by the connection's read task, its close
	// callback and, while reading is paused, its paused steps, of which
	// only one ever runs at a time.
	stage    *bytebufferpool.ByteBuffer // incomplete request head or frame; while paused, all input held
	msg      *bytebufferpool.ByteBuffer // data frames of a fragmented message
	serverID string
	src      netip.Addr           // source: trusted X-Forwarded-For, PROXY header, or the peer (see source)
	connID   string               // phone: its conn_id
	binary   *conn                // phone: the binary it was attached to
	env      *envelope.FromBinary // binary: scratch for the envelope being routed

	fd          int32         // the socket's descriptor, the same across a pause
	unread      int32         // input netpoll held at the last look (noteUnread)
	inputHeld   atomic.Int32  // unread + staged + reassembled, for the memory budget
	sock        atomic.Uint32 // who owns the descriptor (socket.go)
	noticeCode  uint16        // phone: code of its close frame, for the close notice
	msgOp       ws.OpCode     // opcode of the message being reassembled
	role        role
	upgraded    bool
	readDone    bool   // input is discarded from here on
	headOnly    bool   // answering a HEAD request
	proxied     bool   // the PROXY header is consumed
	detached    bool   // phone: left the registry / binary: released its slot
	claimQueued bool   // binary: its claim was queued on a takeover probe (takeover.go)
	srcPort     uint16 // src's port, for logs only (0: the forwarding header named none); fits the padding before state

	// Shared: set by whichever goroutine decides the phone's fate.
	state connState

	deadlines
}

// connState is the part of a connection's fate any goroutine may decide.
type connState struct {
	closing  atomic.Bool   // a final frame is queued: inbound data is ignored
	noNotice atomic.Bool   // phone: its binary gets no close notice (closeRule.silent)
	park     atomic.Uint32 // phone: waiting for its binary's outbox to drain (congestion.go)
}

// setClosing reports whether this call was the one that began the close.
func (s *connState) setClosing(noNotice bool) (first bool) {
	if noNotice {
		s.noNotice.Store(true)
	}
	return s.closing.CompareAndSwap(false, true)
}

// conn is the context.Context netpoll hands back to every callback for its
// connection (onPrepare returns it). It carries no deadline, cancellation or
// values: it only lets a read task find its conn with a type assertion, and
// costs no field (an embedded context.Background() was 16 bytes on every
// connection).

func (*conn) Deadline() (time.Time, bool) { return time.Time{}, false }
func (*conn) Done() <-chan struct{}       { return nil }
func (*conn) Err() error                  { return nil }
func (*conn) Value(any) any               { return nil }
