package loop_test

// The raw client (internal/wsclient) as these tests use it, for what
// gorilla/websocket cannot produce: raw request heads (odd header
// spellings, oversized heads, pipelined frames) and hand-built frames
// (reserved bits, unmasked, bad fragmentation). I/O failures fail the test.

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"switchboard/internal/wsclient"
)

// rawClient is one TCP connection to the relay under one deadline for the
// whole exchange, which keeps every raw read and write bounded without a
// per-call timer.
type rawClient struct {
	*wsclient.Client
	t testing.TB
}

func rawDial(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := wsclient.DialTCP(addr, wsclient.Options{Timeout: testTimeout})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	_ = c.Conn.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { _ = c.Close() })
	return &rawClient{Client: c, t: t}
}

func (rc *rawClient) write(b []byte) {
	rc.t.Helper()
	if _, err := rc.Conn.Write(b); err != nil {
		rc.t.Fatalf("raw write: %v", err)
	}
}

// response reads one HTTP response and its whole body.
func (rc *rawClient) response() (*http.Response, []byte) {
	rc.t.Helper()
	resp, err := rc.ReadResponse(nil)
	if err != nil {
		rc.t.Fatalf("reading response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatalf("reading body: %v", err)
	}
	return resp, body
}

// requestHead builds a GET request head with the given header lines.
func requestHead(path string, lines ...string) string {
	return string(wsclient.Head(path, "relay.test", lines...))
}

// upgradeLines use the protocol's sample key, so a head is the same on
// every run.
var upgradeLines = wsclient.UpgradeLines(wsclient.SampleKey)

func rawBinaryLines(serverID string) []string {
	return []string{"X-Pyrycode-Server: " + serverID, "X-Pyrycode-Version: 2", "User-Agent: raw-test/1"}
}

func rawPhoneLines(serverID string) []string {
	return []string{"X-Pyrycode-Server: " + serverID, "X-Pyrycode-Token: tok", "User-Agent: raw-test/1"}
}

// rawLines are the pyrycode header lines of the role path upgrades to.
func rawLines(path, serverID string) []string {
	if path == "/v1/server" {
		return rawBinaryLines(serverID)
	}
	return rawPhoneLines(serverID)
}

func withUpgrade(lines []string) []string {
	return append(append([]string(nil), lines...), upgradeLines...)
}

// rawUpgrade sends an upgrade request for path with the given pyrycode
// header lines (the WebSocket ones are added), followed in the same write by
// pipelined, and expects a 101 with the right Sec-WebSocket-Accept.
func rawUpgrade(t testing.TB, addr, path string, lines []string, pipelined []byte) *rawClient {
	t.Helper()
	rc := rawDial(t, addr)
	if _, err := rc.Upgrade(wsclient.Request{Path: path, Host: "relay.test", Key: wsclient.SampleKey, Lines: lines, Pipelined: pipelined}); err != nil {
		t.Fatalf("upgrade %s: %v", path, err)
	}
	return rc
}

func rawPhone(t testing.TB, addr, serverID string) *rawClient {
	t.Helper()
	return rawUpgrade(t, addr, "/v1/client", rawPhoneLines(serverID), nil)
}

// readFrame reads one frame, checking the rules a server frame must follow.
// The payload is the test's to keep.
func (rc *rawClient) readFrame() (wsclient.Frame, error) {
	f, err := rc.NextFrame()
	if err != nil {
		return wsclient.Frame{}, err
	}
	if err := f.CheckServer(); err != nil {
		rc.t.Fatal(err)
	}
	f.Payload = bytes.Clone(f.Payload)
	return f, nil
}

func (rc *rawClient) mustFrame() wsclient.Frame {
	rc.t.Helper()
	f, err := rc.readFrame()
	if err != nil {
		rc.t.Fatalf("reading frame: %v", err)
	}
	if !f.Fin {
		rc.t.Fatalf("server sent a fragmented frame (op %#x)", f.Op)
	}
	return f
}

// expectText reads the next frame and requires a text frame holding want.
func (rc *rawClient) expectText(want string) {
	rc.t.Helper()
	f := rc.mustFrame()
	if f.Op != wsclient.OpText || string(f.Payload) != want {
		rc.t.Fatalf("got frame op %#x %q, want text %q", f.Op, f.Payload, want)
	}
}

// expectClose requires the next frame to be a close frame with code and
// reason (code 1005 for an empty body), then the end of the stream.
func (rc *rawClient) expectClose(code int, reason string) {
	rc.t.Helper()
	f := rc.mustFrame()
	if f.Op != wsclient.OpClose {
		rc.t.Fatalf("got frame op %#x %q, want a close frame", f.Op, f.Payload)
	}
	gotCode, gotReason, err := wsclient.ParseClose(f.Payload)
	if err != nil {
		rc.t.Fatal(err)
	}
	if gotCode != code || gotReason != reason {
		rc.t.Fatalf("closed with %d %q, want %d %q", gotCode, gotReason, code, reason)
	}
	rc.expectEOF()
}

// expectEOF requires the relay to end the stream with nothing more sent.
func (rc *rawClient) expectEOF() {
	rc.t.Helper()
	if err := rc.ExpectEOF(); err != nil {
		rc.t.Fatal(err)
	}
}

// pad returns a JSON string literal exactly n bytes long (n >= 2).
func pad(n int) []byte {
	return []byte(`"` + strings.Repeat("a", n-2) + `"`)
}

// splice returns the envelope the binary should see for frame.
func splice(connID string, frame []byte) string {
	return `{"conn_id":"` + connID + `","frame":` + string(frame) + `}`
}

func notice(connID string, code int) string {
	return `{"conn_id":"` + connID + `","close_code":` + strconv.Itoa(code) + `}`
}
