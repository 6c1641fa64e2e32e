package proxyproto

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// proxyV2 builds a PROXY v2 header: verCmd and fam bytes as given, then
// body, with the length field set to len(body).
func proxyV2(verCmd, fam byte, body []byte) []byte {
	b := append([]byte(nil), proxySig[:]...)
	b = append(b, verCmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

func tcp4Body(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

func tcp6Body(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

func TestParseProxyV2Valid(t *testing.T) {
	tlv := []byte{0x04, 0x00, 0x03, 'a', 'b', 'c'} // a NOOP TLV after the addresses
	cases := []struct {
		name string
		in   []byte
		src  string // "ip:port"; "" = use the socket's address
	}{
		{"tcp4", proxyV2(0x21, proxyTCP4, tcp4Body("203.0.113.7", "10.0.0.1", 50000, 443)), "203.0.113.7:50000"},
		{"tcp4 with tlv", proxyV2(0x21, proxyTCP4, append(tcp4Body("198.51.100.1", "10.0.0.1", 1, 2), tlv...)), "198.51.100.1:1"},
		{"tcp6", proxyV2(0x21, proxyTCP6, tcp6Body("2001:db8::42", "2001:db8::1", 50000, 443)), "[2001:db8::42]:50000"},
		{"tcp6 v4-mapped", proxyV2(0x21, proxyTCP6, tcp6Body("::ffff:192.0.2.9", "::1", 1, 2)), "192.0.2.9:1"},
		{"local", proxyV2(0x20, proxyUnspec, nil), ""},
		{"local ignores family and addresses", proxyV2(0x20, 0x31, make([]byte, 216)), ""},
		{"proxy unspec", proxyV2(0x21, proxyUnspec, nil), ""},
		{"proxy unspec with bytes", proxyV2(0x21, proxyUnspec, []byte{1, 2, 3}), ""},
		{"longest", proxyV2(0x21, proxyTCP4, append(tcp4Body("192.0.2.1", "192.0.2.2", 1, 2), make([]byte, maxProxyHeader-16-12)...)), "192.0.2.1:1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := append(append([]byte(nil), tc.in...), "GET / HTTP/1.1\r\n"...) // what follows is not consumed
			src, n, err := ParseV2(in)
			if err != nil || n != len(tc.in) {
				t.Fatalf("n=%d err=%v, want n=%d", n, err, len(tc.in))
			}
			if tc.src == "" {
				if src.IsValid() {
					t.Fatalf("src %v, want none (socket address)", src)
				}
			} else if src != netip.MustParseAddrPort(tc.src) {
				t.Fatalf("src %v, want %s", src, tc.src)
			}
			// Every strict prefix asks for more.
			for k := 0; k < len(tc.in); k++ {
				if _, n, err := ParseV2(tc.in[:k]); n != 0 || err != nil {
					t.Fatalf("prefix %d: n=%d err=%v, want need-more", k, n, err)
				}
			}
		})
	}
}

func TestParseProxyV2Malformed(t *testing.T) {
	good := proxyV2(0x21, proxyTCP4, tcp4Body("192.0.2.1", "192.0.2.2", 1, 2))
	with := func(i int, v byte) []byte {
		b := append([]byte(nil), good...)
		b[i] = v
		return b
	}
	withLen := func(n uint16) []byte {
		b := append([]byte(nil), good...)
		binary.BigEndian.PutUint16(b[14:16], n)
		return b
	}
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"http request", []byte("GET /v1/client HTTP/1.1\r\n\r\n"), ErrSignature},
		{"first byte", []byte("G"), ErrSignature},
		{"proxy v1 text", []byte("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"), ErrSignature},
		{"signature last byte", with(11, 'X'), ErrSignature},
		{"signature middle", with(4, 0x01)[:6], ErrSignature},
		{"version 1", with(12, 0x11), ErrVersion},
		{"version 3", with(12, 0x31), ErrVersion},
		{"version 0", with(12, 0x01), ErrVersion},
		{"command 2", with(12, 0x22), ErrCommand},
		{"command 15", with(12, 0x2f), ErrCommand},
		{"family unix", with(13, 0x31), ErrFamily},
		{"family udp4", with(13, 0x12), ErrFamily},
		{"family udp6", with(13, 0x22), ErrFamily},
		{"family inet no transport", with(13, 0x10), ErrFamily},
		{"family 4", with(13, 0x41), ErrFamily},
		{"tcp4 length 11", withLen(11), ErrTooShort},
		{"tcp4 length 0", withLen(0), ErrTooShort},
		{"tcp6 length 35", proxyV2(0x21, proxyTCP6, make([]byte, 35)), ErrTooShort},
		{"length one over the cap", withLen(maxProxyHeader - 16 + 1), ErrTooLong},
		{"length max", withLen(0xffff), ErrTooLong},
		{"local length over the cap", proxyV2(0x20, proxyUnspec, make([]byte, maxProxyHeader-16+1)), ErrTooLong},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, n, err := ParseV2(tc.in)
			if !errors.Is(err, tc.want) || n != 0 {
				t.Fatalf("n=%d err=%v, want %v", n, err, tc.want)
			}
		})
	}
	// A bad byte is refused as soon as it is there, without waiting for the
	// rest of the header.
	if _, _, err := ParseV2(with(13, 0x31)[:14]); !errors.Is(err, ErrFamily) {
		t.Fatalf("bad family in a 14-byte prefix: %v", err)
	}
	if _, _, err := ParseV2(withLen(0xffff)[:16]); !errors.Is(err, ErrTooLong) {
		t.Fatalf("bad length in a 16-byte prefix: %v", err)
	}
}

func TestParseProxyV2Allocs(t *testing.T) {
	in := proxyV2(0x21, proxyTCP6, tcp6Body("2001:db8::42", "2001:db8::1", 1, 2))
	if a := testing.AllocsPerRun(100, func() { _, _, _ = ParseV2(in) }); a != 0 {
		t.Fatalf("%v allocations per parse", a)
	}
}

// FuzzParseProxyV2 checks that the parser never panics, that a header it
// accepts is within bounds, and that it decides the same on every split:
// each strict prefix of an accepted header asks for more, and anything it
// refuses stays refused as bytes arrive.
func FuzzParseProxyV2(f *testing.F) {
	f.Add(proxyV2(0x21, proxyTCP4, tcp4Body("192.0.2.1", "192.0.2.2", 1, 2)))
	f.Add(proxyV2(0x21, proxyTCP6, tcp6Body("2001:db8::1", "2001:db8::2", 1, 2)))
	f.Add(proxyV2(0x20, proxyUnspec, nil))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		src, n, err := ParseV2(b)
		switch {
		case err != nil:
			if n != 0 || src.IsValid() {
				t.Fatalf("error with n=%d src=%v", n, src)
			}
			// More bytes cannot make it good.
			if _, n2, err2 := ParseV2(append(append([]byte(nil), b...), 0, 0, 0, 0)); err2 == nil || n2 != 0 {
				t.Fatalf("refused %q, accepted when extended: n=%d", b, n2)
			}
		case n == 0:
			if len(b) >= maxProxyHeader || src.IsValid() {
				t.Fatalf("need-more on %d bytes (src %v)", len(b), src)
			}
		default:
			if n < proxyFixedLen || n > len(b) || n > maxProxyHeader {
				t.Fatalf("n=%d out of bounds (len %d)", n, len(b))
			}
			if src.IsValid() && src.Addr().Zone() != "" {
				t.Fatalf("src with a zone: %v", src)
			}
			src2, n2, err2 := ParseV2(b[:n])
			if err2 != nil || n2 != n || src2 != src {
				t.Fatalf("header alone: n=%d src=%v err=%v, want n=%d src=%v", n2, src2, err2, n, src)
			}
			for k := 0; k < n; k++ {
				if _, nk, errk := ParseV2(b[:k]); nk != 0 || errk != nil {
					t.Fatalf("prefix %d of an accepted header: n=%d err=%v", k, nk, errk)
				}
			}
		}
	})
}
