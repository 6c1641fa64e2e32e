// Package bench holds Switchboard's benchmarks (go test -bench ./bench) and
// the minimal WebSocket client they and the load generator use. The client
// is deliberately synchronous and allocation-free per message, so a
// benchmark's allocation count is the relay's, not the client's.
package bench

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Client is one raw WebSocket client connection. It is not safe for
// concurrent use except that one goroutine may write while another reads.
type Client struct {
	Conn net.Conn
	r    *bufio.Reader
	wbuf []byte // masked outbound frame, reused
	rbuf []byte // inbound payload, reused; valid until the next ReadFrame
	hdr  [10]byte
}

// Dial connects to addr (host:port), upgrades on path with the given headers
// and returns the client, or an error carrying the HTTP status on refusal.
// local, when non-nil, is the source address to bind.
func Dial(addr, path string, h http.Header, local net.Addr, timeout time.Duration) (*Client, error) {
	d := net.Dialer{Timeout: timeout, LocalAddr: local}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	var keyRaw [16]byte
	_, _ = rand.Read(keyRaw[:])
	var sb strings.Builder
	fmt.Fprintf(&sb, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n",
		path, addr, base64.StdEncoding.EncodeToString(keyRaw[:]))
	for k, vs := range h {
		for _, v := range vs {
			fmt.Fprintf(&sb, "%s: %s\r\n", k, v)
		}
	}
	sb.WriteString("\r\n")
	_ = nc.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(nc, sb.String()); err != nil {
		nc.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, &StatusError{Code: resp.StatusCode}
	}
	_ = nc.SetDeadline(time.Time{})
	return &Client{Conn: nc, r: br}, nil
}

// StatusError is an upgrade refused with an HTTP status.
type StatusError struct{ Code int }

func (e *StatusError) Error() string { return fmt.Sprintf("upgrade refused: HTTP %d", e.Code) }

// WriteText sends payload as one masked text frame.
func (c *Client) WriteText(payload []byte) error {
	c.wbuf = AppendMaskedFrame(c.wbuf[:0], 0x1, payload)
	_, err := c.Conn.Write(c.wbuf)
	return err
}

// AppendMaskedFrame appends a final client frame with opcode op. The mask is
// fixed: it exists to satisfy the protocol, not to protect anything.
func AppendMaskedFrame(dst []byte, op byte, payload []byte) []byte {
	mask := [4]byte{0x1f, 0x2e, 0x3d, 0x4c}
	n := len(payload)
	switch {
	case n < 126:
		dst = append(dst, 0x80|op, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|op, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|op, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	dst = append(dst, mask[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	for i := range payload {
		dst[start+i] ^= mask[i&3]
	}
	return dst
}

// ErrClosed is returned by ReadFrame when the server sent a close frame; the
// close code is in Client.CloseCode.
var ErrClosed = errors.New("bench: server closed the connection")

// ReadFrame reads one server frame and returns its opcode and payload. The
// payload is valid until the next call. Pings are answered; a close frame
// returns ErrClosed.
func (c *Client) ReadFrame() (op byte, payload []byte, err error) {
	for {
		hdr := c.hdr[:]
		if _, err = io.ReadFull(c.r, hdr[:2]); err != nil {
			return 0, nil, err
		}
		op = hdr[0] & 0x0f
		n := int(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err = io.ReadFull(c.r, hdr[2:4]); err != nil {
				return 0, nil, err
			}
			n = int(binary.BigEndian.Uint16(hdr[2:4]))
		case 127:
			if _, err = io.ReadFull(c.r, hdr[2:10]); err != nil {
				return 0, nil, err
			}
			n = int(binary.BigEndian.Uint64(hdr[2:10]))
		}
		if cap(c.rbuf) < n {
			c.rbuf = make([]byte, n)
		}
		payload = c.rbuf[:n]
		if _, err = io.ReadFull(c.r, payload); err != nil {
			return 0, nil, err
		}
		switch op {
		case 0x9: // ping
			pong := AppendMaskedFrame(nil, 0xA, payload)
			if _, err = c.Conn.Write(pong); err != nil {
				return 0, nil, err
			}
			continue
		case 0x8:
			return op, payload, ErrClosed
		}
		return op, payload, nil
	}
}

// Close closes the socket.
func (c *Client) Close() error { return c.Conn.Close() }
