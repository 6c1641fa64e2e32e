package wsframe

import (
	"strings"
	"testing"
	"unsafe"
)

const sampleHead = "GET /v1/client?x=1 HTTP/1.1\r\n" +
	"Host: relay.example\r\n" +
	"Upgrade: websocket\r\n" +
	"Connection: keep-alive, Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Sec-WebSocket-Version: 13\r\n" +
	"x-pyrycode-server:   srv-1 \t\r\n" +
	"X-Pyrycode-Server: second\r\n" +
	"X-Pyrycode-Token:\r\n" +
	"X-Empty-Spaces:  \t \r\n" +
	"X-Tabbed:\t \tv a l\t\r\n" +
	"User-Agent: pyry/1.0 (linux)\r\n" +
	"Hostname: not-host\r\n" +
	"Connection: close\r\n" +
	"\r\n"

func TestParseRequestGood(t *testing.T) {
	head := []byte(sampleHead)
	var r Request
	if err := ParseRequest(head, &r); err != nil {
		t.Fatal(err)
	}
	if string(r.Method) != "GET" || string(r.Path) != "/v1/client" {
		t.Fatalf("method %q path %q", r.Method, r.Path)
	}
	headers := []struct {
		name string
		want *string // nil: absent
	}{
		{"Host", sp("relay.example")},
		{"host", sp("relay.example")},
		{"HOST", sp("relay.example")},
		{"Hostname", sp("not-host")},
		{"Hos", nil},
		{"Upgrade", sp("websocket")},
		{"X-Pyrycode-Server", sp("srv-1")}, // first wins, trimmed
		{"X-Pyrycode-Token", sp("")},       // present, empty
		{"X-Empty-Spaces", sp("")},
		{"X-Tabbed", sp("v a l")},
		{"User-Agent", sp("pyry/1.0 (linux)")},
		{"Connection", sp("keep-alive, Upgrade")},
		{"X-Missing", nil},
		{"", nil},
		{"GET /v1/client?x=1 HTTP/1.1", nil},
		{"Host: relay.example", nil},
	}
	for _, h := range headers {
		got := r.Header(h.name)
		switch {
		case h.want == nil && got != nil:
			t.Errorf("Header(%q) = %q, want nil", h.name, got)
		case h.want != nil && got == nil:
			t.Errorf("Header(%q) = nil, want %q", h.name, *h.want)
		case h.want != nil && string(got) != *h.want:
			t.Errorf("Header(%q) = %q, want %q", h.name, got, *h.want)
		}
		if got != nil && !inside(head, got) {
			t.Errorf("Header(%q) points outside the head", h.name)
		}
	}
	tokens := []struct {
		name, token string
		want        bool
	}{
		{"Connection", "upgrade", true},
		{"Connection", "UPGRADE", true},
		{"Connection", "keep-alive", true},
		{"connection", "close", true}, // second Connection header
		{"Connection", "upgrad", false},
		{"Connection", "keep", false},
		{"Connection", "keep-alive, Upgrade", false},
		{"Upgrade", "websocket", true},
		{"Upgrade", "WebSocket", true},
		{"Upgrade", "web", false},
		{"X-Tabbed", "v a l", true},
		{"X-Missing", "x", false},
		{"X-Pyrycode-Server", "second", true},
	}
	for _, c := range tokens {
		if got := r.HasToken(c.name, c.token); got != c.want {
			t.Errorf("HasToken(%q, %q) = %v, want %v", c.name, c.token, got, c.want)
		}
	}
}

func sp(s string) *string { return &s }

// inside reports whether sub's bytes lie within outer's.
func inside(outer, sub []byte) bool {
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(outer)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(sub)))
	return p >= lo && p+uintptr(len(sub)) <= lo+uintptr(len(outer))
}

func TestParseRequestShapes(t *testing.T) {
	cases := []struct {
		name   string
		head   string
		ok     bool
		method string
		path   string
	}{
		{"minimal", "GET / HTTP/1.1\r\n\r\n", true, "GET", "/"},
		{"http 1.0", "GET /x HTTP/1.0\r\nHost: a\r\n\r\n", true, "GET", "/x"},
		{"post", "POST /v1/server HTTP/1.1\r\n\r\n", true, "POST", "/v1/server"},
		{"query only", "GET ?a HTTP/1.1\r\n\r\n", true, "GET", ""},
		{"query twice", "GET /a?b?c HTTP/1.1\r\n\r\n", true, "GET", "/a"},
		{"absolute form", "GET http://h/p HTTP/1.1\r\n\r\n", true, "GET", "http://h/p"},
		{"colon in value", "GET / HTTP/1.1\r\nHost: a:80\r\n\r\n", true, "GET", "/"},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", true, "GET", "/"},
		{"empty value", "GET / HTTP/1.1\r\nA:\r\n\r\n", true, "GET", "/"},

		{"no crlf", "GET / HTTP/1.1", false, "", ""},
		{"empty", "", false, "", ""},
		{"only crlf", "\r\n\r\n", false, "", ""},
		{"leading space", " GET / HTTP/1.1\r\n\r\n", false, "", ""},
		{"no spaces", "GET/HTTP/1.1\r\n\r\n", false, "", ""},
		{"one space", "GET /HTTP/1.1\r\n\r\n", false, "", ""},
		{"double space", "GET  / HTTP/1.1\r\n\r\n", false, "", ""},
		{"empty target", "GET  HTTP/1.1\r\n\r\n", false, "", ""},
		{"http 2", "GET / HTTP/2.0\r\n\r\n", false, "", ""},
		{"http 1.10", "GET / HTTP/1.10\r\n\r\n", false, "", ""},
		{"http short", "GET / HTTP/1.\r\n\r\n", false, "", ""},
		{"lowercase http", "GET / http/1.1\r\n\r\n", false, "", ""},
		{"trailing space", "GET / HTTP/1.1 \r\n\r\n", false, "", ""},
		{"header no colon", "GET / HTTP/1.1\r\nHost a\r\n\r\n", false, "", ""},
		{"header empty name", "GET / HTTP/1.1\r\n: a\r\n\r\n", false, "", ""},
		{"obs fold space", "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", false, "", ""},
		{"obs fold tab", "GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n", false, "", ""},
		{"obs fold space with colon", "GET / HTTP/1.1\r\nA: b\r\n c: d\r\n\r\n", false, "", ""},
		{"obs fold tab with colon", "GET / HTTP/1.1\r\nA: b\r\n\tc: d\r\n\r\n", false, "", ""},
		{"space name", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", false, "", ""},
		{"last line unterminated", "GET / HTTP/1.1\r\nHost: a\r\nX: y", false, "", ""},
	}
	for _, c := range cases {
		var r Request
		err := ParseRequest([]byte(c.head), &r)
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
			continue
		}
		if err != nil {
			if err != ErrMalformedRequest {
				t.Errorf("%s: err = %v", c.name, err)
			}
			continue
		}
		if string(r.Method) != c.method || string(r.Path) != c.path {
			t.Errorf("%s: method %q path %q, want %q %q", c.name, r.Method, r.Path, c.method, c.path)
		}
	}
}

func TestHeaderEnd(t *testing.T) {
	cases := []struct {
		in   string
		want int
	}{
		{"", -1},
		{"GET / HTTP/1.1\r\n", -1},
		{"GET / HTTP/1.1\r\nHost: a\r\n", -1},
		{"GET / HTTP/1.1\r\n\r", -1},
		{"GET / HTTP/1.1\n\n", -1},
		{"GET / HTTP/1.1\r\n\r\n", 18},
		{"GET / HTTP/1.1\r\n\r\n\x81\x85", 18},
		{"\r\n\r\n", 4},
		{"a\r\n\r\nb\r\n\r\n", 5},
	}
	for _, c := range cases {
		if got := HeaderEnd([]byte(c.in)); got != c.want {
			t.Errorf("HeaderEnd(%q) = %d, want %d", c.in, got, c.want)
		}
	}
	if end := HeaderEnd([]byte(sampleHead + "\x81\x85")); end != len(sampleHead) {
		t.Errorf("HeaderEnd(sample) = %d, want %d", end, len(sampleHead))
	}
}

// refHeaderLines and refValues are a plain reading of the header rules: split
// the header lines, keep those whose name (up to the first colon) has name's
// length and equals it ignoring case, trim spaces and tabs. (The length check
// keeps Unicode folding such as U+212A KELVIN SIGN ~ 'k' out of ASCII names.)
func refHeaderLines(head []byte) []string {
	s := string(head)
	i := strings.Index(s, "\r\n")
	s = s[i+2:]
	if len(s) >= 2 {
		s = s[:len(s)-2]
	}
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\r\n"), "\r\n")
}

func refValues(head []byte, name string) []string {
	var vs []string
	for _, line := range refHeaderLines(head) {
		c := strings.IndexByte(line, ':')
		if c >= 0 && c == len(name) && strings.EqualFold(line[:c], name) {
			vs = append(vs, strings.Trim(line[c+1:], " \t"))
		}
	}
	return vs
}

func refHasToken(head []byte, name, token string) bool {
	for _, v := range refValues(head, name) {
		for _, elem := range strings.Split(v, ",") {
			if strings.EqualFold(strings.Trim(elem, " \t"), token) {
				return true
			}
		}
	}
	return false
}

func TestHeaderMatchesReference(t *testing.T) {
	head := []byte(sampleHead)
	var r Request
	if err := ParseRequest(head, &r); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Host", "Connection", "X-Pyrycode-Server", "X-Pyrycode-Token", "Nope", "hostname", "X-Empty-Spaces"} {
		checkHeader(t, head, &r, name)
		for _, tok := range []string{"upgrade", "close", "srv-1", "keep-alive"} {
			if got, want := r.HasToken(name, tok), refHasToken(head, name, tok); got != want {
				t.Errorf("HasToken(%q, %q) = %v, reference %v", name, tok, got, want)
			}
		}
	}
}

func checkHeader(t *testing.T, head []byte, r *Request, name string) {
	t.Helper()
	got := r.Header(name)
	vs := refValues(head, name)
	switch {
	case len(vs) == 0 && got != nil:
		t.Fatalf("Header(%q) = %q, reference: absent (head %q)", name, got, head)
	case len(vs) > 0 && (got == nil || string(got) != vs[0]):
		t.Fatalf("Header(%q) = %q, reference %q (head %q)", name, got, vs[0], head)
	}
	if got != nil {
		if !inside(head, got) {
			t.Fatalf("Header(%q) points outside the head", name)
		}
		if len(got) > 0 && (got[0] == ' ' || got[0] == '\t' || got[len(got)-1] == ' ' || got[len(got)-1] == '\t') {
			t.Fatalf("Header(%q) = %q is not trimmed", name, got)
		}
		if strings.Contains(string(got), "\r\n") {
			t.Fatalf("Header(%q) = %q spans lines", name, got)
		}
	}
}

func TestRequestAllocs(t *testing.T) {
	head := []byte(sampleHead)
	var r Request
	n := testing.AllocsPerRun(100, func() {
		if ParseRequest(head, &r) != nil {
			panic("parse")
		}
		_ = r.Header("X-Pyrycode-Server")
		_ = r.Header("Sec-WebSocket-Key")
		_ = r.HasToken("Connection", "upgrade")
		_ = HeaderEnd(head)
	})
	if n != 0 {
		t.Errorf("ParseRequest/Header/HasToken allocate %v times", n)
	}
}

func TestParseRequestRefusesBareLineBreaksAndControlBytes(t *testing.T) {
	for _, head := range []string{
		"GET / HTTP/1.1\r\nHost: a\nX-Evil: 1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\rX-Evil: 1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
		"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		var r Request
		if err := ParseRequest([]byte(head), &r); err == nil {
			t.Errorf("accepted %q", head)
		}
	}
	var r Request
	if err := ParseRequest([]byte("GET / HTTP/1.1\r\nUser-Agent: a\tb\r\n\r\n"), &r); err != nil {
		t.Errorf("tab in a value refused: %v", err)
	}
}
