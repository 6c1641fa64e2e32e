package loop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"

	"switchboard/internal/wsclient"
	"switchboard/wsframe"
)

// A harness for driving the relay's connection code without netpoll or
// TCP: each connection is one end of a socketpair, with a fake
// netpoll.Connection, and the test reads the other end as the peer would.
// The Server is built with New and never serves, so no read task, timer or
// listener acts unless a test calls it; the deadlines are set far beyond
// any test's length, so the wheel never fires on its own either.

// unitWait bounds every wait on the peer end or on a counter.
const unitWait = 5 * time.Second

// unitLong is every timer's length: long past any test.
const unitLong = 10 * time.Minute

// wsKey is the Sec-WebSocket-Key of RFC 6455 section 1.3's example; its
// Sec-WebSocket-Accept is computed independently in want101.
const wsKey = "dGhlIHNhbXBsZSBub25jZQ=="

// unitConfig is a small-budget configuration whose timers never fire
// during a test.
func unitConfig() Config {
	return Config{
		MaxMessageBytes:    1024,
		PhoneOutboxBytes:   4096,
		BinaryOutboxBytes:  8192,
		HeartbeatInterval:  unitLong,
		PongTimeout:        unitLong,
		HandshakeTimeout:   unitLong,
		MessageReadTimeout: unitLong,
		GracePeriod:        unitLong,
		TakeoverTimeout:    unitLong,
		CloseLinger:        unitLong,
		DrainTimeout:       unitWait,
	}
}

// fakeNC stands in for netpoll's connection. Only what the paths under test
// use is implemented; anything else reaches the nil embedded interface and
// panics, which is what should happen if a path starts using more.
type fakeNC struct {
	netpoll.Connection
	c      *conn
	fd     int
	addr   *net.TCPAddr
	calls  atomic.Int32 // Close calls
	closes atomic.Int32 // close callbacks run
	once   sync.Once
}

// Close runs the connection's close callback once, as netpoll does however
// often it is called, then closes the descriptor: the callback fences the
// writers off it first (outbox.close), as it must before netpoll closes it.
func (f *fakeNC) Close() error {
	f.calls.Add(1)
	f.once.Do(func() {
		f.closes.Add(1)
		_ = f.c.onClosed(f)
		_ = syscall.Close(f.fd)
	})
	return nil
}

func (f *fakeNC) RemoteAddr() net.Addr { return f.addr }

func (f *fakeNC) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
}

// unitRelay is a Server that never serves, with the fake connections made
// for it.
type unitRelay struct {
	t     *testing.T
	srv   *Server
	mu    sync.Mutex
	conns []*fakeConn
	port  int
}

func newUnitRelay(t *testing.T, cfg Config) *unitRelay {
	t.Helper()
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r := &unitRelay{t: t, srv: srv, port: 40000}
	t.Cleanup(func() {
		// Close every socket first, so that Shutdown finds nothing live and
		// stops the wheel, the read workers and the ready poller at once.
		// Stopping an event loop that never served is a no-op in netpoll.
		r.mu.Lock()
		conns := r.conns
		r.mu.Unlock()
		for _, fc := range conns {
			fc.c.closeSocket()
			_ = fc.peer.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), unitWait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return r
}

// fakeConn is one connection: the relay's conn and the test's end of its
// socket.
type fakeConn struct {
	t    *testing.T
	c    *conn
	nc   *fakeNC
	peer net.Conn
	rd   *bufio.Reader
}

// newConn makes a connection as the relay's accept does (onPrepare), with
// the role its request path would give it (route). No handshake deadline
// is booked: the request is taken as already read.
func (r *unitRelay) newConn(rl role) *fakeConn {
	t := r.t
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		t.Fatalf("nonblock: %v", err)
	}
	f := os.NewFile(uintptr(fds[1]), "peer")
	peer, err := net.FileConn(f) // a duplicate, in Go's poller: reads take deadlines
	_ = f.Close()
	if err != nil {
		_ = syscall.Close(fds[0])
		t.Fatalf("FileConn: %v", err)
	}
	r.mu.Lock()
	r.port++
	port := r.port
	r.mu.Unlock()
	addr := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: port}
	c := &conn{srv: r.srv}
	nc := &fakeNC{c: c, fd: fds[0], addr: addr}
	c.nc = nc
	c.fd = int32(fds[0])
	c.src = netip.AddrFrom4([4]byte{192, 0, 2, 1})
	c.out.init(c, r.srv.cfg.PhoneOutboxBytes)
	c.role = rl
	if rl == roleBinary {
		c.out.limit = r.srv.cfg.BinaryOutboxBytes
		c.out.fanIn = true
	}
	fc := &fakeConn{t: t, c: c, nc: nc, peer: peer, rd: bufio.NewReader(peer)}
	r.mu.Lock()
	r.conns = append(r.conns, fc)
	r.mu.Unlock()
	return fc
}

// dial makes a connection and upgrades it; see upgrade.
func (r *unitRelay) dial(rl role, serverID string, hold bool) (*fakeConn, bool) {
	r.t.Helper()
	fc := r.newConn(rl)
	return fc, fc.upgrade(serverID, hold)
}

// upgrade does what the handshake's upgrade does once the request passed
// every check: count the connection live, queue the 101 held, let the
// registry decide, and, when it has, release the 101 and start the
// heartbeat. With hold the 101 stays held after the decision, so nothing
// is written until the test releases it. It reports register's answer:
// false while the claim waits on a takeover probe.
func (fc *fakeConn) upgrade(serverID string, hold bool) (decided bool) {
	c := fc.c
	c.srv.live.Add(1)
	c.upgraded = true
	c.serverID = serverID
	c.accept([]byte(wsKey))
	if !c.register(nil) {
		return false
	}
	if !hold {
		c.out.release()
		c.startHeartbeat()
		c.startLifetime()
	}
	return true
}

// want101 is the 101 the relay answers wsKey with; the accept value comes
// from the test client's own RFC computation, not the relay's code.
func want101() string {
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + wsclient.Accept(wsKey) + "\r\n\r\n"
}

// cost101 is what the 101 is charged in an outbox.
func cost101() int { return len(want101()) + OutboxItemOverhead }

// read fills p from the peer end, failing the test after unitWait.
func (fc *fakeConn) read(p []byte) {
	fc.t.Helper()
	_ = fc.peer.SetReadDeadline(time.Now().Add(unitWait))
	if _, err := io.ReadFull(fc.rd, p); err != nil {
		fc.t.Fatalf("peer %v: read %d bytes: %v", fc.nc.addr, len(p), err)
	}
}

// expect101 reads the 101, byte for byte.
func (fc *fakeConn) expect101() {
	fc.t.Helper()
	want := want101()
	got := make([]byte, len(want))
	fc.read(got)
	if string(got) != want {
		fc.t.Fatalf("peer %v: read %q, want the 101 %q", fc.nc.addr, got, want)
	}
}

// peerFrame is one server frame as the peer reads it.
type peerFrame struct {
	op      ws.OpCode
	payload []byte
}

// readFrame reads one frame. Server frames are final and unmasked.
func (fc *fakeConn) readFrame() peerFrame {
	fc.t.Helper()
	var hb [wsframe.MaxHeaderSize]byte
	fc.read(hb[:2])
	n := 2
	switch hb[1] & 0x7f {
	case 126:
		fc.read(hb[2:4])
		n = 4
	case 127:
		fc.read(hb[2:10])
		n = 10
	}
	h, hn, err := wsframe.ParseHeader(hb[:n])
	if err != nil || hn != n {
		fc.t.Fatalf("peer %v: bad frame header % x: %v", fc.nc.addr, hb[:n], err)
	}
	if !h.Fin || h.Masked || h.Rsv != 0 {
		fc.t.Fatalf("peer %v: frame header %+v: want final, unmasked, no reserved bits", fc.nc.addr, h)
	}
	p := make([]byte, h.Length)
	fc.read(p)
	return peerFrame{h.OpCode, p}
}

// expectFrame reads one frame and requires its opcode and payload.
func (fc *fakeConn) expectFrame(op ws.OpCode, payload []byte) {
	fc.t.Helper()
	f := fc.readFrame()
	if f.op != op || string(f.payload) != string(payload) {
		fc.t.Fatalf("peer %v: read frame op %v %q, want op %v %q", fc.nc.addr, f.op, f.payload, op, payload)
	}
}

// expectPing reads one ping with no payload.
func (fc *fakeConn) expectPing() {
	fc.t.Helper()
	fc.expectFrame(ws.OpPing, nil)
}

// expectClose reads one close frame and requires its code and reason.
func (fc *fakeConn) expectClose(code uint16, reason string) {
	fc.t.Helper()
	f := fc.readFrame()
	if f.op != ws.OpClose || len(f.payload) < 2 {
		fc.t.Fatalf("peer %v: read frame op %v %q, want close %d %q", fc.nc.addr, f.op, f.payload, code, reason)
	}
	got, text := binary.BigEndian.Uint16(f.payload), string(f.payload[2:])
	if got != code || text != reason {
		fc.t.Fatalf("peer %v: read close %d %q, want %d %q", fc.nc.addr, got, text, code, reason)
	}
}

// expectEOF requires the relay's end to be shut for writing (half-closed
// or closed) with nothing more written.
func (fc *fakeConn) expectEOF() {
	fc.t.Helper()
	_ = fc.peer.SetReadDeadline(time.Now().Add(unitWait))
	var b [256]byte
	n, err := fc.rd.Read(b[:])
	if n > 0 || !errors.Is(err, io.EOF) {
		fc.t.Fatalf("peer %v: read %q, %v; want EOF", fc.nc.addr, b[:n], err)
	}
}

// charged is what the connection's outbox holds against its budget.
func (fc *fakeConn) charged() int {
	fc.c.out.mu.Lock()
	defer fc.c.out.mu.Unlock()
	return fc.c.out.charged
}

// queuedFrames is how many frames wait in the outbox, not yet taken by a
// writer.
func (fc *fakeConn) queuedFrames() int {
	fc.c.out.mu.Lock()
	defer fc.c.out.mu.Unlock()
	if fc.c.out.queue == nil {
		return 0
	}
	return len(fc.c.out.queue.frames)
}

// waitIdle waits for the outbox to be written out and its writer gone, so
// that what the peer has not read by then was never sent.
func (fc *fakeConn) waitIdle() {
	fc.t.Helper()
	waitUntil(fc.t, "outbox of "+fc.nc.addr.String()+" idle", func() bool {
		o := &fc.c.out
		o.mu.Lock()
		defer o.mu.Unlock()
		return !o.running && o.queue == nil && o.charged == 0
	})
}

// closeSocket ends the connection from the relay's side, as a write
// failure, a linger's end or a pause's close would: through closeSocket,
// which calls the fake's Close while the socket is live.
func (fc *fakeConn) closeSocket() { fc.c.closeSocket() }

// waitUntil polls cond in short steps until it holds, failing the test
// after unitWait.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(unitWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// wireText is a whole server text frame carrying payload.
func wireText(payload []byte) []byte {
	return append(wsframe.AppendServerHeader(nil, ws.OpText, len(payload)), payload...)
}

// payloadN is a distinct payload of n bytes for frame i.
func payloadN(i, n int) []byte {
	b := bytes.Repeat([]byte{'x'}, n)
	copy(b, fmt.Sprintf("#%03d", i))
	return b
}

// queuedTotal is OutboxBytesQueued, the relay-wide charge.
func (r *unitRelay) queuedTotal() int64 { return r.srv.counters.OutboxBytesQueued.Load() }

// waitQueuedTotal waits for OutboxBytesQueued to reach want: writers
// subtract what they wrote only after the peer could already read it.
func (r *unitRelay) waitQueuedTotal(want int64) {
	r.t.Helper()
	waitUntil(r.t, "OutboxBytesQueued to be "+strconv.FormatInt(want, 10), func() bool { return r.queuedTotal() == want })
}
