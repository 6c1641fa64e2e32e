package wsframe

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// FuzzParseHeader parses arbitrary bytes as a frame header and writes an
// arbitrary server header.
//
// Parsing: never panics, n <= len(b), an error comes with n == 0, a parsed
// header re-encodes to exactly the bytes it came from (only minimal length
// encodings are accepted), every strict prefix of those bytes asks for
// more, and gobwas/ws reads the same header from them.
//
// Writing: AppendServerHeader(op, length) parses back to a final, unmasked
// header with that opcode and length, of ServerHeaderSize bytes.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'}, byte(ws.OpText), uint64(5))
	f.Add([]byte{0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4}, byte(ws.OpBinary), uint64(125))
	f.Add([]byte{0x82, 0x7e, 0x00, 0x7d}, byte(ws.OpBinary), uint64(126))
	f.Add([]byte{0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4}, byte(ws.OpClose), uint64(65535))
	f.Add([]byte{0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0}, byte(ws.OpPing), uint64(65536))
	f.Add([]byte{0x89, 0x80}, byte(ws.OpPong), uint64(1)<<63-1)
	f.Add([]byte{0x7f}, byte(0xff), uint64(1)<<63)
	f.Fuzz(func(t *testing.T, b []byte, op byte, length uint64) {
		// Nothing past the longest header matters. Cutting the rest keeps
		// the engine quick: it minimises every new interesting input with a
		// pass quadratic in the input's length, and long inputs stalled
		// 20-second runs for most of their time.
		if len(b) > 2*MaxHeaderSize {
			b = b[:2*MaxHeaderSize]
		}
		h, n, err := ParseHeader(b)
		switch {
		case n < 0 || n > len(b) || n > MaxHeaderSize:
			t.Fatalf("ParseHeader(% x) n = %d", b, n)
		case err != nil && n != 0:
			t.Fatalf("ParseHeader(% x) = %d with error %v", b, n, err)
		case err == nil && n > 0:
			if h.Length < 0 {
				t.Fatalf("ParseHeader(% x) length %d", b, h.Length)
			}
			if enc := appendHeader(nil, h); !bytes.Equal(enc, b[:n]) {
				t.Fatalf("ParseHeader(% x) = %+v, which encodes as % x", b[:n], h, enc)
			}
			for k := 0; k < n; k++ {
				if _, pn, perr := ParseHeader(b[:k]); pn != 0 || perr != nil {
					t.Fatalf("prefix % x of % x: %d, %v", b[:k], b[:n], pn, perr)
				}
			}
			if gh, gerr := ws.ReadHeader(bytes.NewReader(b)); gerr != nil || gh != h {
				t.Fatalf("gobwas reads %+v, %v from % x; ParseHeader %+v", gh, gerr, b[:n], h)
			}
			_ = CheckClient(h)
		}

		code := ws.OpCode(op & 0x0f)
		ln := int(length &^ (1 << 63))
		w := AppendServerHeader(b[:0:0], code, ln)
		if len(w) != ServerHeaderSize(ln) {
			t.Fatalf("AppendServerHeader(%v, %d) is %d bytes, ServerHeaderSize says %d", code, ln, len(w), ServerHeaderSize(ln))
		}
		wh, wn, werr := ParseHeader(w)
		if werr != nil || wn != len(w) || wh != (ws.Header{Fin: true, OpCode: code, Length: int64(ln)}) {
			t.Fatalf("AppendServerHeader(%v, %d) = % x parses as %+v, %d, %v", code, ln, w, wh, wn, werr)
		}
	})
}

// FuzzParseRequest parses arbitrary bytes as a request head. It never
// panics; on success Method and Path lie inside the head, and every Header
// lookup (of well-known names and of the fuzzed one) returns a trimmed,
// single-line slice inside the head that agrees with a plain reference
// reading, as HasToken does.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(sampleHead), "X-Pyrycode-Server")
	f.Add([]byte("GET /v1/server HTTP/1.1\r\nX-Pyrycode-Server: s\r\nX-Pyrycode-Version: 2\r\nUser-Agent: pyry\r\n\r\n"), "user-agent")
	f.Add([]byte("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), "A")
	f.Add([]byte("GET / HTTP/1.1\r\n: a\r\n\r\n"), "")
	f.Add([]byte("GET / HTTP/1.1\r\nk: v\r\n\r\n"), "\u212a")
	f.Add([]byte("GET /?a HTTP/1.1\r\n\r\n"), "connection")
	f.Add([]byte("\r\n"), ":")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		if len(data) > 512 {
			data = data[:512] // see the note on FuzzParseHeader
		}
		// The whole input as given, and the head HeaderEnd finds in it.
		inputs := [][]byte{data}
		if end := HeaderEnd(data); end >= 0 {
			if end < 4 || end > len(data) || string(data[end-4:end]) != "\r\n\r\n" || bytes.Contains(data[:end-1], []byte("\r\n\r\n")) {
				t.Fatalf("HeaderEnd(%q) = %d", data, end)
			}
			inputs = append(inputs, data[:end])
		} else if bytes.Contains(data, []byte("\r\n\r\n")) {
			t.Fatalf("HeaderEnd(%q) = -1", data)
		}
		for _, head := range inputs {
			var r Request
			if err := ParseRequest(head, &r); err != nil {
				if err != ErrMalformedRequest {
					t.Fatalf("ParseRequest error %v", err)
				}
				continue
			}
			if len(r.Method) == 0 || !inside(head, r.Method) || !inside(head, r.Path) ||
				bytes.ContainsAny(r.Method, " ") || bytes.ContainsAny(r.Path, " ?") ||
				bytes.Contains(r.Method, []byte("\r\n")) || bytes.Contains(r.Path, []byte("\r\n")) {
				t.Fatalf("ParseRequest(%q): method %q path %q", head, r.Method, r.Path)
			}
			for _, n := range []string{name, "Connection", "X-Pyrycode-Server", "Sec-WebSocket-Key"} {
				checkHeader(t, head, &r, n)
			}
			for _, tok := range []string{"upgrade", strings.Trim(name, " \t")} {
				if tok == "" {
					continue
				}
				for _, n := range []string{name, "Connection"} {
					if got, want := r.HasToken(n, tok), refHasToken(head, n, tok); got != want {
						t.Fatalf("HasToken(%q, %q) = %v, reference %v (head %q)", n, tok, got, want, head)
					}
				}
			}
		}
	})
}
