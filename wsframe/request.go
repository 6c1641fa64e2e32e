package wsframe

import (
	"bytes"
	"errors"
)

// ErrMalformedRequest is an upgrade request that is not well-formed HTTP/1.1.
var ErrMalformedRequest = errors.New("wsframe: malformed HTTP request")

var headerEnd = []byte("\r\n\r\n")

// HeaderEnd returns the length of the request head at the start of b,
// including the blank line that ends it, or -1 when b does not hold it yet.
func HeaderEnd(b []byte) int {
	i := bytes.Index(b, headerEnd)
	if i < 0 {
		return -1
	}
	return i + len(headerEnd)
}

// Request is a parsed HTTP/1.1 request head. Its slices point into the bytes
// given to ParseRequest and are valid only while the caller keeps those intact.
type Request struct {
	Method []byte
	Path   []byte // request target up to '?'
	lines  []byte // header lines, each ending in "\r\n"
}

// ParseRequest parses head, a request head ending in "\r\n\r\n" (see
// HeaderEnd). It checks the request line and that every header line has a
// name and a colon; values are looked up lazily with Header.
func ParseRequest(head []byte, r *Request) error {
	if !cleanHead(head) {
		return ErrMalformedRequest
	}
	eol := bytes.Index(head, []byte("\r\n"))
	if eol < 0 {
		return ErrMalformedRequest
	}
	line := head[:eol]
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return ErrMalformedRequest
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 || !bytes.HasPrefix(rest[sp2+1:], []byte("HTTP/1.")) || len(rest[sp2+1:]) != 8 {
		return ErrMalformedRequest
	}
	r.Method = line[:sp1]
	r.Path = rest[:sp2]
	if q := bytes.IndexByte(r.Path, '?'); q >= 0 {
		r.Path = r.Path[:q]
	}
	r.lines = head[eol+2:]
	if len(r.lines) >= 2 {
		r.lines = r.lines[:len(r.lines)-2] // the blank line
	}
	for ls := r.lines; len(ls) > 0; {
		n := bytes.Index(ls, []byte("\r\n"))
		if n < 0 {
			return ErrMalformedRequest
		}
		if c := bytes.IndexByte(ls[:n], ':'); c <= 0 || ls[0] == ' ' || ls[0] == '\t' {
			return ErrMalformedRequest // no name, or obsolete line folding
		}
		ls = ls[n+2:]
	}
	return nil
}

// Header returns the first value of the named header with surrounding spaces
// and tabs trimmed, or nil when the request has no such header. name is
// matched case-insensitively.
func (r *Request) Header(name string) []byte {
	v, _ := r.next(r.lines, name)
	return v
}

// HasToken reports whether any value of the named header holds token as one
// of its comma-separated elements, case-insensitively ("Connection: keep-alive,
// Upgrade" has the token "upgrade").
func (r *Request) HasToken(name, token string) bool {
	for ls := r.lines; len(ls) > 0; {
		v, rest := r.next(ls, name)
		if v == nil {
			return false
		}
		for len(v) > 0 {
			var elem []byte
			if c := bytes.IndexByte(v, ','); c >= 0 {
				elem, v = v[:c], v[c+1:]
			} else {
				elem, v = v, nil
			}
			if bytes.EqualFold(trim(elem), []byte(token)) {
				return true
			}
		}
		ls = rest
	}
	return false
}

// next finds the first header called name in ls and returns its trimmed value
// and the lines after it.
func (r *Request) next(ls []byte, name string) (value, rest []byte) {
	for len(ls) > 0 {
		n := bytes.Index(ls, []byte("\r\n"))
		if n < 0 {
			return nil, nil
		}
		line := ls[:n]
		ls = ls[n+2:]
		c := bytes.IndexByte(line, ':')
		if c == len(name) && bytes.EqualFold(line[:c], []byte(name)) {
			v := trim(line[c+1:])
			if v == nil {
				v = line[c+1 : c+1] // present but empty: non-nil, zero length
			}
			return v, ls
		}
	}
	return nil, nil
}

func trim(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// cleanHead reports whether head holds no control bytes other than tabs and
// CRLF line ends: a bare CR or LF inside a value is how requests get split
// differently by a proxy and the server behind it.
func cleanHead(head []byte) bool {
	for i := 0; i < len(head); i++ {
		switch c := head[i]; {
		case c == '\r':
			if i+1 >= len(head) || head[i+1] != '\n' {
				return false
			}
			i++
		case c == '\t':
		case c < 0x20 || c == 0x7f:
			return false
		}
	}
	return true
}
