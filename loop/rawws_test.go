package loop_test

// A hand-driven TCP client for what gorilla/websocket cannot produce: raw
// request heads (odd header spellings, oversized heads, pipelined frames)
// and hand-built frames (reserved bits, unmasked, bad fragmentation).

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// WebSocket opcodes and the FIN bit, as they appear in a frame's first byte.
const (
	opCont   byte = 0x0
	opText   byte = 0x1
	opBinary byte = 0x2
	opClose  byte = 0x8
	opPing   byte = 0x9
	opPong   byte = 0xA
	finBit   byte = 0x80
)

// rawClient is one TCP connection to the relay, read through a bufio.Reader
// so an HTTP response and the frames after it can be read in turn.
type rawClient struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func rawDial(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	// One deadline for the whole exchange keeps every raw read and write
	// bounded without a per-call timer.
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { _ = c.Close() })
	return &rawClient{t: t, c: c, br: bufio.NewReader(c)}
}

func (rc *rawClient) write(b []byte) {
	rc.t.Helper()
	if _, err := rc.c.Write(b); err != nil {
		rc.t.Fatalf("raw write: %v", err)
	}
}

// response reads one HTTP response and its whole body.
func (rc *rawClient) response() (*http.Response, []byte) {
	rc.t.Helper()
	resp, err := http.ReadResponse(rc.br, nil)
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
	var b strings.Builder
	b.WriteString("GET " + path + " HTTP/1.1\r\nHost: relay.test\r\n")
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

const rawKey = "dGhlIHNhbXBsZSBub25jZQ=="        // RFC 6455's sample key
const rawAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" // and its accept value

var upgradeLines = []string{
	"Upgrade: websocket",
	"Connection: Upgrade",
	"Sec-WebSocket-Version: 13",
	"Sec-WebSocket-Key: " + rawKey,
}

func rawBinaryLines(serverID string) []string {
	return []string{"X-Pyrycode-Server: " + serverID, "X-Pyrycode-Version: 2", "User-Agent: raw-test/1"}
}

func rawPhoneLines(serverID string) []string {
	return []string{"X-Pyrycode-Server: " + serverID, "X-Pyrycode-Token: tok", "User-Agent: raw-test/1"}
}

func withUpgrade(lines []string) []string {
	return append(append([]string(nil), lines...), upgradeLines...)
}

// rawUpgrade sends an upgrade request for path with the given pyrycode
// header lines (the WebSocket ones are added), followed in the same write by
// pipelined, and expects a 101.
func rawUpgrade(t testing.TB, addr, path string, lines []string, pipelined []byte) *rawClient {
	t.Helper()
	rc := rawDial(t, addr)
	rc.write(append([]byte(requestHead(path, withUpgrade(lines)...)), pipelined...))
	resp, _ := rc.response()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade %s: status %d", path, resp.StatusCode)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != rawAccept {
		t.Fatalf("Sec-WebSocket-Accept %q, want %q", got, rawAccept)
	}
	return rc
}

func rawPhone(t testing.TB, addr, serverID string) *rawClient {
	t.Helper()
	return rawUpgrade(t, addr, "/v1/client", rawPhoneLines(serverID), nil)
}

// frameBytes builds one frame whose first byte is b0 (FIN, RSV bits and
// opcode as given), with a minimally encoded length, masked with a random
// key unless unmasked.
func frameBytes(b0 byte, masked bool, payload []byte) []byte {
	out := []byte{b0}
	var mbit byte
	if masked {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, mbit|byte(n))
	case n <= 0xffff:
		out = append(out, mbit|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, mbit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !masked {
		return append(out, payload...)
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	out = append(out, key[:]...)
	start := len(out)
	out = append(out, payload...)
	for i := range payload {
		out[start+i] ^= key[i%4]
	}
	return out
}

// cframe is a masked client frame: fin plus opcode.
func cframe(fin bool, op byte, payload []byte) []byte {
	if fin {
		op |= finBit
	}
	return frameBytes(op, true, payload)
}

func closeBody(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// fragments splits msg into n client frames (the first with op, the rest
// continuations), FIN on the last; some fragments may be empty.
func fragments(op byte, msg []byte, n int) []byte {
	var out []byte
	step := (len(msg) + n - 1) / n
	for i := 0; i < n; i++ {
		lo, hi := min(i*step, len(msg)), min((i+1)*step, len(msg))
		fop := opCont
		if i == 0 {
			fop = op
		}
		out = append(out, cframe(i == n-1, fop, msg[lo:hi])...)
	}
	return out
}

// serverFrame is one frame read from the relay.
type serverFrame struct {
	fin     bool
	op      byte
	payload []byte
}

// readFrame reads one frame, checking the rules a server frame must follow.
func (rc *rawClient) readFrame() (serverFrame, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(rc.br, hdr[:]); err != nil {
		return serverFrame{}, err
	}
	if hdr[0]&0x70 != 0 {
		rc.t.Fatalf("server frame with reserved bits: %#x", hdr[0])
	}
	if hdr[1]&0x80 != 0 {
		rc.t.Fatalf("server frame is masked")
	}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(rc.br, ext[:]); err != nil {
			return serverFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(rc.br, ext[:]); err != nil {
			return serverFrame{}, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(rc.br, payload); err != nil {
		return serverFrame{}, err
	}
	return serverFrame{fin: hdr[0]&finBit != 0, op: hdr[0] & 0x0f, payload: payload}, nil
}

func (rc *rawClient) mustFrame() serverFrame {
	rc.t.Helper()
	f, err := rc.readFrame()
	if err != nil {
		rc.t.Fatalf("reading frame: %v", err)
	}
	if !f.fin {
		rc.t.Fatalf("server sent a fragmented frame (op %#x)", f.op)
	}
	return f
}

// expectText reads the next frame and requires a text frame holding want.
func (rc *rawClient) expectText(want string) {
	rc.t.Helper()
	f := rc.mustFrame()
	if f.op != opText || string(f.payload) != want {
		rc.t.Fatalf("got frame op %#x %q, want text %q", f.op, f.payload, want)
	}
}

// expectClose requires the next frame to be a close frame with code and
// reason (code 1005 for an empty body), then the end of the stream.
func (rc *rawClient) expectClose(code int, reason string) {
	rc.t.Helper()
	f := rc.mustFrame()
	if f.op != opClose {
		rc.t.Fatalf("got frame op %#x %q, want a close frame", f.op, f.payload)
	}
	gotCode, gotReason := 1005, ""
	if len(f.payload) >= 2 {
		gotCode, gotReason = int(binary.BigEndian.Uint16(f.payload)), string(f.payload[2:])
	} else if len(f.payload) == 1 {
		rc.t.Fatalf("close frame with a 1-byte body")
	}
	if gotCode != code || gotReason != reason {
		rc.t.Fatalf("closed with %d %q, want %d %q", gotCode, gotReason, code, reason)
	}
	rc.expectEOF()
}

// expectEOF requires the relay to end the stream with nothing more sent.
func (rc *rawClient) expectEOF() {
	rc.t.Helper()
	var b [1]byte
	n, err := rc.br.Read(b[:])
	if n > 0 {
		rc.t.Fatalf("unexpected byte %#x after the close frame", b[0])
	}
	if err == nil || (!errors.Is(err, io.EOF) && !isConnReset(err)) {
		rc.t.Fatalf("expected the relay to end the connection, got %v", err)
	}
}

func isConnReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
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
