package wsclient

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 10 * time.Second

// echoServer is a gorilla/websocket server on a loopback port: a second
// implementation to hold this one to. It echoes every message, and before
// each echo carries out what the message asks for ("ping:x", "close:bye").
func echoServer(t *testing.T, got chan<- http.Header, pongs chan<- string) string {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got != nil {
			got <- r.Header.Clone()
		}
		if r.Header.Get("X-Refuse") != "" {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadLimit(1 << 20)
		c.SetPongHandler(func(s string) error {
			if pongs != nil {
				pongs <- s
			}
			return nil
		})
		deadline := time.Now().Add(testTimeout)
		for {
			typ, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			switch s := string(msg); {
			case strings.HasPrefix(s, "ping:"):
				_ = c.WriteControl(websocket.PingMessage, msg[5:], deadline)
			case strings.HasPrefix(s, "close:"):
				_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, s[6:]), deadline)
				return
			}
			if err := c.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func mustDial(t *testing.T, addr string, r Request) *Client {
	t.Helper()
	c, err := Dial(addr, Options{Timeout: testTimeout}, r)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.Conn.SetDeadline(time.Now().Add(testTimeout))
	return c
}

func TestDialSendsHeadersAndEchoesEveryLength(t *testing.T) {
	headers := make(chan http.Header, 1)
	addr := echoServer(t, headers, nil)
	c := mustDial(t, addr, Request{Path: "/x", Header: http.Header{"X-Pyrycode-Server": {"s1"}}, Lines: []string{"X-Odd: a b"}})
	h := <-headers
	if h.Get("X-Pyrycode-Server") != "s1" || h.Get("X-Odd") != "a b" {
		t.Fatalf("server saw headers %v", h)
	}
	// Each length on either side of a length-encoding boundary.
	for _, n := range []int{0, 1, 125, 126, 127, 0xffff, 0x10000, 300000} {
		for _, op := range []byte{OpText, OpBinary} {
			msg := bytes.Repeat([]byte("t"), n)
			if op == OpBinary {
				msg = bytes.Repeat([]byte{0xfe}, n)
			}
			if err := c.WriteFrame(op, msg); err != nil {
				t.Fatal(err)
			}
			gotOp, got, err := c.ReadFrame()
			if err != nil || gotOp != op || !bytes.Equal(got, msg) {
				t.Fatalf("%d bytes op %#x: echo op %#x, %d bytes, %v", n, op, gotOp, len(got), err)
			}
		}
	}
}

func TestReadFrameAnswersPings(t *testing.T) {
	pongs := make(chan string, 1)
	addr := echoServer(t, nil, pongs)
	c := mustDial(t, addr, Request{Path: "/"})
	if err := c.WriteText([]byte("ping:p-1")); err != nil {
		t.Fatal(err)
	}
	// The ping comes first; ReadFrame answers it and returns the echo.
	op, got, err := c.ReadFrame()
	if err != nil || op != OpText || string(got) != "ping:p-1" {
		t.Fatalf("got op %#x %q %v", op, got, err)
	}
	select {
	case p := <-pongs:
		if p != "p-1" {
			t.Fatalf("pong %q, want p-1", p)
		}
	case <-time.After(testTimeout):
		t.Fatal("no pong reached the server")
	}
}

func TestCloseFrameThenEOF(t *testing.T) {
	addr := echoServer(t, nil, nil)

	c := mustDial(t, addr, Request{Path: "/"})
	if err := c.WriteText([]byte("close:bye")); err != nil {
		t.Fatal(err)
	}
	op, payload, err := c.ReadFrame()
	if !errors.Is(err, ErrClosed) || op != OpClose {
		t.Fatalf("ReadFrame: op %#x, %v; want ErrClosed", op, err)
	}
	if code, reason, err := ParseClose(payload); code != 4000 || reason != "bye" || err != nil {
		t.Fatalf("close %d %q %v", code, reason, err)
	}
	if err := c.ExpectEOF(); err != nil {
		t.Fatal(err)
	}

	// ReadClose refuses to pass over a message to reach the close.
	c = mustDial(t, addr, Request{Path: "/"})
	_, _ = c.Conn.Write(append(AppendMasked(nil, OpText, []byte("echo me")), AppendMasked(nil, OpText, []byte("close:later"))...))
	if _, _, err := c.ReadClose(); err == nil {
		t.Fatal("ReadClose passed over the echo of the first message")
	}
}

func TestReadCloseSkipsPings(t *testing.T) {
	addr := rawServer(t, func(nc net.Conn, br *bufio.Reader) {
		readHead(br)
		_, _ = io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: "+Accept(SampleKey)+"\r\n\r\n")
		_, _ = nc.Write(AppendFrame(nil, Fin|OpPing, nil, []byte("p")))
		_, _ = nc.Write(AppendFrame(nil, Fin|OpClose, nil, CloseBody(1001, "shutting down")))
	})
	c, err := Dial(addr, Options{Timeout: testTimeout}, Request{Path: "/", Key: SampleKey})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.Conn.SetDeadline(time.Now().Add(testTimeout))
	if code, reason, err := c.ReadClose(); code != 1001 || reason != "shutting down" || err != nil {
		t.Fatalf("ReadClose: %d %q %v", code, reason, err)
	}
	if err := c.ExpectEOF(); err != nil {
		t.Fatal(err)
	}
}

func TestDialRefused(t *testing.T) {
	addr := echoServer(t, nil, nil)
	_, err := Dial(addr, Options{Timeout: testTimeout}, Request{Path: "/", Header: http.Header{"X-Refuse": {"1"}}})
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 503 {
		t.Fatalf("Dial: %v, want a StatusError 503", err)
	}
}

// rawServer accepts one connection on a loopback port and hands it to serve.
func rawServer(t *testing.T, serve func(net.Conn, *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(testTimeout))
		serve(nc, bufio.NewReader(nc))
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// readHead reads a request head up to its blank line.
func readHead(br *bufio.Reader) string {
	var b strings.Builder
	for {
		l, err := br.ReadString('\n')
		b.WriteString(l)
		if err != nil || l == "\r\n" {
			return b.String()
		}
	}
}

func TestUpgradeWritesHeadAndPipelinedBytesAsGiven(t *testing.T) {
	heads := make(chan string, 1)
	pipelined := make(chan []byte, 1)
	serverFrames := append(AppendFrame(nil, OpText, nil, []byte("part")), AppendFrame(nil, Fin|0x40|OpCont, &[4]byte{1, 2, 3, 4}, []byte("rsv"))...)
	addr := rawServer(t, func(nc net.Conn, br *bufio.Reader) {
		heads <- readHead(br)
		p := make([]byte, 7)
		_, _ = io.ReadFull(br, p)
		pipelined <- p
		_, _ = io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
		_, _ = nc.Write(serverFrames)
	})
	c, err := DialTCP(addr, Options{Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.Conn.SetDeadline(time.Now().Add(testTimeout))
	resp, err := c.Upgrade(Request{Path: "/v1/server", Key: SampleKey, Lines: []string{"x-lower: 1", "X-Dup: a", "X-Dup: b"},
		Pipelined: Masked(true, OpText, []byte("h"))})
	if err != nil {
		t.Fatalf("Upgrade: %v", err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	want := "GET /v1/server HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + SampleKey + "\r\nx-lower: 1\r\nX-Dup: a\r\nX-Dup: b\r\n\r\n"
	if got := <-heads; got != want {
		t.Fatalf("head\n%q\nwant\n%q", got, want)
	}
	if p := <-pipelined; p[0] != Fin|OpText || p[1] != 0x80|1 {
		t.Fatalf("pipelined frame % x", p)
	}

	f, err := c.NextFrame()
	if err != nil || f.Fin || f.Op != OpText || f.Masked || f.RSV != 0 || string(f.Payload) != "part" || f.CheckServer() != nil {
		t.Fatalf("first frame %+v %v", f, err)
	}
	f, err = c.NextFrame()
	if err != nil || !f.Fin || f.Op != OpCont || !f.Masked || f.RSV != 0x40 || string(f.Payload) != "rsv" {
		t.Fatalf("second frame %+v %v", f, err)
	}
	if f.CheckServer() == nil {
		t.Fatal("CheckServer passed a masked frame with RSV1")
	}
	if err := c.ExpectEOF(); err != nil {
		t.Fatal(err)
	}
}

func TestUpgradeChecksAccept(t *testing.T) {
	addr := rawServer(t, func(nc net.Conn, br *bufio.Reader) {
		readHead(br)
		_, _ = io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: wrong\r\n\r\n")
		_, _ = br.ReadByte() // until the client hangs up
	})
	if _, err := Dial(addr, Options{Timeout: testTimeout}, Request{Path: "/"}); err == nil || !strings.Contains(err.Error(), "Sec-WebSocket-Accept") {
		t.Fatalf("Dial: %v, want a bad-accept error", err)
	}
}

func TestExpectEOFFailsOnMoreBytes(t *testing.T) {
	addr := rawServer(t, func(nc net.Conn, _ *bufio.Reader) { _, _ = nc.Write([]byte{0x88}) })
	c, err := DialTCP(addr, Options{Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.Conn.SetDeadline(time.Now().Add(testTimeout))
	if err := c.ExpectEOF(); err == nil {
		t.Fatal("ExpectEOF passed a stream that carried a byte")
	}
}

func TestReadResponseToHEAD(t *testing.T) {
	addr := rawServer(t, func(nc net.Conn, br *bufio.Reader) {
		readHead(br)
		_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
	})
	c, err := DialTCP(addr, Options{Timeout: testTimeout, ReadBufferSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.Conn.SetDeadline(time.Now().Add(testTimeout))
	_, _ = c.Conn.Write(Head("/healthz", "relay.test"))
	resp, err := c.ReadResponse(&http.Request{Method: "HEAD"})
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != 9 {
		t.Fatalf("response %v %v", resp, err)
	}
	if err := c.ExpectEOF(); err != nil {
		t.Fatal(err)
	}
}

// The protocol's own examples of frames, byte for byte.
func TestAppendFrameEncoding(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []byte
		want []byte
	}{
		{"unmasked text", AppendFrame(nil, Fin|OpText, nil, []byte("Hello")), []byte{0x81, 0x05, 'H', 'e', 'l', 'l', 'o'}},
		{"masked text", AppendFrame(nil, Fin|OpText, &[4]byte{0x37, 0xfa, 0x21, 0x3d}, []byte("Hello")),
			[]byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}},
		{"first fragment", AppendFrame(nil, OpText, nil, []byte("Hel")), []byte{0x01, 0x03, 'H', 'e', 'l'}},
		{"unmasked ping", Unmasked(true, OpPing, []byte("Hello")), []byte{0x89, 0x05, 'H', 'e', 'l', 'l', 'o'}},
		{"256 bytes", AppendFrame(nil, Fin|OpBinary, nil, make([]byte, 256))[:4], []byte{0x82, 0x7e, 0x01, 0x00}},
		{"64 KiB", AppendFrame(nil, Fin|OpBinary, nil, make([]byte, 65536))[:10], []byte{0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0}},
		{"close body", CloseBody(1001, "bye"), []byte{0x03, 0xe9, 'b', 'y', 'e'}},
	} {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s: % x, want % x", tc.name, tc.got, tc.want)
		}
	}
}

// Client frames read back as they were built: masks, fragments, FIN bits.
func TestBuiltFramesReadBack(t *testing.T) {
	msg := []byte("fragmented message")
	wire := Fragments(OpText, msg, 25) // more fragments than bytes: trailing ones empty
	wire = append(wire, Masked(false, 0x20|OpBinary, []byte("rsv2"))...)
	wire = AppendMasked(wire, OpClose, CloseBody(4001, "x"))
	c := &Client{r: bufio.NewReader(bytes.NewReader(wire))}
	var got []byte
	for i := range 25 {
		f, err := c.NextFrame()
		if err != nil || !f.Masked || f.Fin != (i == 24) || (i == 0) != (f.Op == OpText) || (i > 0) != (f.Op == OpCont) {
			t.Fatalf("fragment %d: %+v %v", i, f, err)
		}
		got = append(got, f.Payload...)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("fragments carry %q", got)
	}
	if f, err := c.NextFrame(); err != nil || f.Fin || f.RSV != 0x20 || f.Op != OpBinary || string(f.Payload) != "rsv2" {
		t.Fatalf("RSV2 frame %+v %v", f, err)
	}
	if code, reason, err := c.ReadClose(); code != 4001 || reason != "x" || err != nil {
		t.Fatalf("close %d %q %v", code, reason, err)
	}
	if _, err := c.NextFrame(); err != io.EOF {
		t.Fatalf("after the last frame: %v", err)
	}
	if code, _, err := ParseClose(nil); code != 1005 || err != nil {
		t.Fatalf("empty close body: %d %v", code, err)
	}
	if _, _, err := ParseClose([]byte{3}); err == nil {
		t.Fatal("1-byte close body accepted")
	}
}

// WriteText and ReadFrame allocate nothing once their buffers have grown:
// the benchmarks count allocations and must see only the relay's.
func TestSteadyStateAllocatesNothing(t *testing.T) {
	payload := bytes.Repeat([]byte("a"), 256)
	frame := AppendMasked(nil, OpText, payload)
	reply := AppendFrame(nil, Fin|OpText, nil, payload)
	ping := AppendFrame(nil, Fin|OpPing, nil, []byte("p"))
	pong := AppendMasked(nil, OpPong, []byte("p"))
	addr := rawServer(t, func(nc net.Conn, br *bufio.Reader) {
		in := make([]byte, len(frame))
		in2 := make([]byte, len(pong))
		for {
			if _, err := io.ReadFull(br, in); err != nil {
				return
			}
			if _, err := nc.Write(ping); err != nil {
				return
			}
			if _, err := io.ReadFull(br, in2); err != nil || !bytes.Equal(in2, pong) {
				return
			}
			if _, err := nc.Write(reply); err != nil {
				return
			}
		}
	})
	c, err := DialTCP(addr, Options{Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.Conn.SetDeadline(time.Now().Add(testTimeout))
	var failed error
	roundTrip := func() {
		if err := c.WriteText(payload); err != nil {
			failed = err
			return
		}
		if _, p, err := c.ReadFrame(); err != nil || len(p) != len(payload) {
			failed = errors.Join(err, errors.New("short reply"))
		}
	}
	roundTrip() // grows the buffers
	if allocs := testing.AllocsPerRun(200, roundTrip); allocs != 0 || failed != nil {
		t.Fatalf("%v allocations per round trip (%v)", allocs, failed)
	}
}

func TestSpreadCyclesLoopbackSources(t *testing.T) {
	var s Spread
	seen := map[string]bool{}
	for range 16 {
		a := s.Next().(*net.TCPAddr)
		if !a.IP.IsLoopback() || a.IP[len(a.IP)-1] < 2 || a.IP[len(a.IP)-1] > 9 || a.Port != 0 {
			t.Fatalf("source %v", a)
		}
		seen[a.IP.String()] = true
	}
	if len(seen) != 8 {
		t.Fatalf("%d distinct sources, want 8", len(seen))
	}
}
