// Package wsclient is a raw, synchronous WebSocket client: the handshake is
// written by hand, frames are built and read by hand, and nothing runs in the
// background. The load generator and the benchmarks use it because it
// allocates nothing per message (their allocation counts are then the
// relay's); the tests use it for what a WebSocket library will not produce:
// odd request heads, pipelined frames, reserved bits, unmasked or
// misfragmented frames. It depends on nothing of the relay's, so a command
// can link it without linking the relay.
package wsclient

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Client is one TCP connection to a WebSocket server, read through a
// bufio.Reader so an HTTP response and the frames after it are read in turn.
// It is not safe for concurrent use, except that one goroutine may write
// while another reads.
type Client struct {
	// Conn is the socket. Callers set deadlines on it and write raw bytes to
	// it directly; reads must go through the Client, whose reader may
	// already hold bytes the socket delivered.
	Conn net.Conn

	addr string // as dialled: the default Host
	r    *bufio.Reader
	wbuf []byte // the writer's: WriteText and WriteFrame build frames here
	pbuf []byte // the reader's: ReadFrame builds pongs here
	rbuf []byte // the reader's: every Frame.Payload points into it
	hdr  [14]byte
}

// Options say how to dial.
type Options struct {
	// Timeout bounds the TCP connect and, for Dial, the whole handshake;
	// zero means no bound.
	Timeout time.Duration
	// Local, when non-nil, is the source address to bind (see Spread).
	Local net.Addr
	// Control, when non-nil, runs on the socket before it connects (to set
	// a small receive buffer, say).
	Control func(network, address string, c syscall.RawConn) error
	// ReadBufferSize is the reader's size; 4096 when zero.
	ReadBufferSize int
	// TLS, when non-nil, runs a TLS handshake over the TCP connection (a
	// wss:// URL) before anything is sent; see dialTLS.
	TLS *tls.Config
}

// DialTCP connects to addr (host:port) and sends nothing: the caller writes
// the request, whole or in pieces, and reads the answer with ReadResponse or
// ReadUpgrade. With o.TLS it completes the TLS handshake first, so Conn is
// then a *tls.Conn.
func DialTCP(addr string, o Options) (*Client, error) {
	d := net.Dialer{Timeout: o.Timeout, LocalAddr: o.Local, Control: o.Control}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if o.TLS != nil {
		if nc, err = dialTLS(nc, addr, o); err != nil {
			return nil, err
		}
	}
	size := o.ReadBufferSize
	if size <= 0 {
		size = 4096
	}
	return &Client{Conn: nc, addr: addr, r: bufio.NewReaderSize(nc, size)}, nil
}

// Dial connects to addr and upgrades with r, all within o.Timeout; the
// socket has no deadline when it returns. A refusal is a *StatusError.
func Dial(addr string, o Options, r Request) (*Client, error) {
	c, err := DialTCP(addr, o)
	if err != nil {
		return nil, err
	}
	if o.Timeout > 0 {
		_ = c.Conn.SetDeadline(time.Now().Add(o.Timeout))
	}
	resp, err := c.Upgrade(r)
	if err != nil {
		c.Conn.Close()
		return nil, err
	}
	_ = resp.Body.Close()
	if o.Timeout > 0 {
		_ = c.Conn.SetDeadline(time.Time{})
	}
	return c, nil
}

// Request is an upgrade request.
type Request struct {
	Path string
	// Host is the Host header; empty means the address dialled.
	Host string
	// Key is the Sec-WebSocket-Key; empty means a fresh random one.
	Key string
	// Header holds further headers, written after the WebSocket ones.
	Header http.Header
	// Lines are written verbatim after Header, each ended with CRLF: for
	// spellings and duplicates an http.Header cannot hold.
	Lines []string
	// Pipelined follows the request head in the same write.
	Pipelined []byte
}

// Upgrade sends r's request head (and Pipelined) and reads the answer,
// without touching deadlines. A 101 with the wrong Sec-WebSocket-Accept is
// an error; any other status is a *StatusError, returned with the response
// so its body can be read. Frames after the 101 are left to read.
func (c *Client) Upgrade(r Request) (*http.Response, error) {
	if r.Key == "" {
		r.Key = NewKey()
	}
	if r.Host == "" {
		r.Host = c.addr
	}
	lines := UpgradeLines(r.Key)
	for k, vs := range r.Header {
		for _, v := range vs {
			lines = append(lines, k+": "+v)
		}
	}
	lines = append(lines, r.Lines...)
	if _, err := c.Conn.Write(append(Head(r.Path, r.Host, lines...), r.Pipelined...)); err != nil {
		return nil, err
	}
	return c.ReadUpgrade(r.Key)
}

// ReadUpgrade reads the answer to an upgrade request sent with key, judged
// as Upgrade judges it.
func (c *Client) ReadUpgrade(key string) (*http.Response, error) {
	resp, err := c.ReadResponse(nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return resp, &StatusError{Code: resp.StatusCode}
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), Accept(key); got != want {
		return resp, fmt.Errorf("wsclient: Sec-WebSocket-Accept %q, want %q", got, want)
	}
	return resp, nil
}

// ReadResponse reads one HTTP response (to req, which matters only for
// HEAD; nil means GET). The caller reads and closes its body.
func (c *Client) ReadResponse(req *http.Request) (*http.Response, error) {
	return http.ReadResponse(c.r, req)
}

// Buffered is how many bytes the reader holds that no read has returned.
func (c *Client) Buffered() int { return c.r.Buffered() }

// StatusError is an upgrade refused with an HTTP status.
type StatusError struct{ Code int }

func (e *StatusError) Error() string { return fmt.Sprintf("upgrade refused: HTTP %d", e.Code) }

// Head builds a GET request head for path: the Host line, then lines, each
// ended with CRLF, then the blank line. The caller owns the result.
func Head(path, host string, lines ...string) []byte {
	var b strings.Builder
	b.WriteString("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n")
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// UpgradeLines are the header lines that make a GET a WebSocket upgrade.
func UpgradeLines(key string) []string {
	return []string{
		"Upgrade: websocket",
		"Connection: Upgrade",
		"Sec-WebSocket-Version: 13",
		"Sec-WebSocket-Key: " + key,
	}
}

// SampleKey is the protocol's own example key, for tests that want a
// request head that is the same on every run; Accept(SampleKey) is
// "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".
const SampleKey = "dGhlIHNhbXBsZSBub25jZQ=="

// NewKey returns a fresh random Sec-WebSocket-Key.
func NewKey() string {
	var k [16]byte
	_, _ = rand.Read(k[:])
	return base64.StdEncoding.EncodeToString(k[:])
}

// Accept is the Sec-WebSocket-Accept a server must answer key with.
func Accept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// Spread hands out source addresses 127.0.0.2 … 127.0.0.9 in turn, so that
// thousands of loopback connections (and the TIME_WAIT of earlier runs) do
// not exhaust one source address's ephemeral ports. The zero value is ready;
// it is safe for concurrent use.
type Spread struct{ n atomic.Uint32 }

// Next returns the next source address.
func (s *Spread) Next() net.Addr {
	n := s.n.Add(1)
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+n%8))}
}

// WriteText sends payload as one masked text frame; see WriteFrame.
func (c *Client) WriteText(payload []byte) error { return c.WriteFrame(OpText, payload) }

// WriteFrame sends payload as one final masked frame with opcode op. The
// frame is built in the Client's write buffer, so once that has grown to
// the largest frame sent nothing is allocated. For anything else (partial
// frames, bad frames, several at once) write to Conn.
func (c *Client) WriteFrame(op byte, payload []byte) error {
	c.wbuf = AppendMasked(c.wbuf[:0], op, payload)
	_, err := c.Conn.Write(c.wbuf)
	return err
}

// ErrClosed is returned by ReadFrame when the server sent a close frame.
var ErrClosed = errors.New("wsclient: server closed the connection")

// NextFrame reads one frame and returns it as sent: nothing is answered or
// judged (see Frame.CheckServer). Its payload is valid until the next read.
func (c *Client) NextFrame() (Frame, error) {
	hdr := c.hdr[:]
	if _, err := io.ReadFull(c.r, hdr[:2]); err != nil {
		return Frame{}, err
	}
	f := Frame{Fin: hdr[0]&Fin != 0, RSV: hdr[0] & 0x70, Op: hdr[0] & 0x0f, Masked: hdr[1]&0x80 != 0}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(c.r, hdr[2:4]); err != nil {
			return Frame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(hdr[2:4]))
	case 127:
		if _, err := io.ReadFull(c.r, hdr[2:10]); err != nil {
			return Frame{}, err
		}
		n = binary.BigEndian.Uint64(hdr[2:10])
	}
	if f.Masked {
		if _, err := io.ReadFull(c.r, hdr[10:14]); err != nil {
			return Frame{}, err
		}
	}
	if n > uint64(maxInt) {
		return Frame{}, fmt.Errorf("wsclient: frame length %d", n)
	}
	if uint64(cap(c.rbuf)) < n {
		c.rbuf = make([]byte, n)
	}
	f.Payload = c.rbuf[:n]
	if _, err := io.ReadFull(c.r, f.Payload); err != nil {
		return Frame{}, err
	}
	if f.Masked {
		for i := range f.Payload {
			f.Payload[i] ^= hdr[10+(i&3)]
		}
	}
	return f, nil
}

const maxInt = int(^uint(0) >> 1)

// ReadFrame reads up to the next frame that is not a ping, answering each
// ping with a pong as it goes, and returns its opcode and payload (valid
// until the next read). A close frame returns ErrClosed with its payload.
// Once the reader and the pong buffer have grown, it allocates nothing.
func (c *Client) ReadFrame() (op byte, payload []byte, err error) {
	for {
		f, err := c.NextFrame()
		if err != nil {
			return 0, nil, err
		}
		switch f.Op {
		case OpPing:
			c.pbuf = AppendMasked(c.pbuf[:0], OpPong, f.Payload)
			if _, err := c.Conn.Write(c.pbuf); err != nil {
				return 0, nil, err
			}
			continue
		case OpClose:
			return f.Op, f.Payload, ErrClosed
		}
		return f.Op, f.Payload, nil
	}
}

// ReadClose reads up to the close frame, skipping pings (not answered), and
// returns its code and reason; any other frame before it is an error.
func (c *Client) ReadClose() (code int, reason string, err error) {
	for {
		f, err := c.NextFrame()
		if err != nil {
			return 0, "", err
		}
		switch f.Op {
		case OpPing:
			continue
		case OpClose:
			return ParseClose(f.Payload)
		}
		return 0, "", fmt.Errorf("wsclient: frame op %#x %q before the close", f.Op, f.Payload)
	}
}

// ExpectEOF reads once and reports nil if the server ended the stream (EOF
// or a reset) with nothing more sent.
func (c *Client) ExpectEOF() error {
	var b [1]byte
	n, err := c.r.Read(b[:])
	switch {
	case n > 0:
		return fmt.Errorf("wsclient: unexpected byte %#x where the stream should end", b[0])
	case err == nil:
		return errors.New("wsclient: empty read where the stream should end")
	case errors.Is(err, io.EOF) || IsReset(err):
		return nil
	}
	return fmt.Errorf("wsclient: expected the server to end the connection, got %v", err)
}

// IsReset reports whether err is the socket failing for a reason other than
// a deadline: what a peer that closes with unread input causes.
func IsReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

// Close closes the socket.
func (c *Client) Close() error { return c.Conn.Close() }
