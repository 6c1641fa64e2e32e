package loop_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"switchboard/internal/relaytest"
	"switchboard/loop"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 10 * time.Second

// shortGrace is for tests about what happens once a binary's slot is gone:
// the grace window (docs/protocol.md, "Server-ids: claim, grace, takeover")
// still runs, just briefly.
const shortGrace = 20 * time.Millisecond

// relay is a Switchboard serving on a loopback port for one test.
type relay struct{ *relaytest.Relay }

func startRelay(t testing.TB, cfg loop.Config) *relay {
	t.Helper()
	return &relay{relaytest.Start(t, cfg)}
}

// event is one thing a peer's read loop saw: a message or the end.
type event struct {
	typ  int
	data []byte
	err  error // set on the last event; *websocket.CloseError for a close frame
}

// peer is a gorilla/websocket client whose read loop queues every event, so
// it answers pings and sees close frames while the test looks elsewhere.
type peer struct {
	conn   *websocket.Conn
	events chan event
}

func binaryHeaders(serverID string) http.Header {
	return http.Header{
		"X-Pyrycode-Server":  {serverID},
		"X-Pyrycode-Version": {"2"},
		"User-Agent":         {"pyry-test/1"},
	}
}

func phoneHeaders(serverID string) http.Header {
	return http.Header{
		"X-Pyrycode-Server": {serverID},
		"X-Pyrycode-Token":  {"secret-token-123"},
		"User-Agent":        {"phone-test/1"},
	}
}

var dialer = websocket.Dialer{HandshakeTimeout: testTimeout}

func dial(t testing.TB, addr, path string, h http.Header) (*peer, *http.Response, error) {
	t.Helper()
	c, resp, err := dialer.Dial("ws://"+addr+path, h)
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(64 << 20)
	return newPeer(t, c), resp, nil
}

// newPeer starts c's read loop and closes c when the test ends.
func newPeer(t testing.TB, c *websocket.Conn) *peer {
	p := &peer{conn: c, events: make(chan event, 4096)}
	go p.readLoop()
	t.Cleanup(func() { _ = c.Close() })
	return p
}

func (p *peer) readLoop() {
	defer close(p.events)
	for {
		typ, data, err := p.conn.ReadMessage()
		if err != nil {
			p.events <- event{err: err}
			return
		}
		p.events <- event{typ: typ, data: data}
	}
}

func mustDial(t testing.TB, addr, path string, h http.Header) *peer {
	t.Helper()
	p, resp, err := dial(t, addr, path, h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", path, err, status)
	}
	return p
}

func (r *relay) binary(t testing.TB, serverID string) *peer {
	t.Helper()
	return mustDial(t, r.Addr, "/v1/server", binaryHeaders(serverID))
}

func (r *relay) phone(t testing.TB, serverID string) *peer {
	t.Helper()
	return mustDial(t, r.Addr, "/v1/client", phoneHeaders(serverID))
}

// next returns the next message, failing the test on a close or timeout.
func (p *peer) next(t testing.TB) []byte {
	t.Helper()
	select {
	case ev, ok := <-p.events:
		if !ok || ev.err != nil {
			t.Fatalf("expected a message, connection ended: %v", ev.err)
		}
		if ev.typ != websocket.TextMessage {
			t.Fatalf("expected a text frame, got type %d", ev.typ)
		}
		return ev.data
	case <-time.After(testTimeout):
		t.Fatalf("no message within %s", testTimeout)
	}
	return nil
}

// closed waits for the connection to end and returns its close frame's
// code and reason; code -1 means it ended without a close frame.
func (p *peer) closed(t testing.TB) (int, string) {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				return -1, "events drained"
			}
			if ev.err == nil {
				continue // skip messages queued before the close
			}
			var ce *websocket.CloseError
			if errors.As(ev.err, &ce) {
				return ce.Code, ce.Text
			}
			return -1, ev.err.Error()
		case <-deadline:
			t.Fatalf("connection still open after %s", testTimeout)
		}
	}
}

func (p *peer) expectClose(t testing.TB, code int, reason string) {
	t.Helper()
	gotCode, gotReason := p.closed(t)
	if gotCode != code || gotReason != reason {
		t.Fatalf("closed with %d %q, want %d %q", gotCode, gotReason, code, reason)
	}
}

// quiet asserts nothing arrives for d: used only to check absence after a
// later event proved the relay already processed what came before.
func (p *peer) quiet(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case ev := <-p.events:
		t.Fatalf("unexpected event: %q %v", ev.data, ev.err)
	case <-time.After(d):
	}
}

func (p *peer) send(t testing.TB, msg string) {
	t.Helper()
	if err := p.conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// waitFor polls cond until it holds or the test timeout passes. It is for
// state the relay exposes only as counters (gauges after a disconnect).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// connIDOf sends one frame from the phone and returns the conn_id the binary
// sees with it.
func connIDOf(t testing.TB, phone, binary *peer) string {
	t.Helper()
	phone.send(t, `{"hello":1}`)
	env := binary.next(t)
	const head = `{"conn_id":"`
	s := string(env)
	if !strings.HasPrefix(s, head) {
		t.Fatalf("envelope %s", s)
	}
	return s[len(head) : len(head)+strings.Index(s[len(head):], `"`)]
}
