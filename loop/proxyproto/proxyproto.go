// Package proxyproto parses the PROXY protocol v2 header (haproxy's PROXY
// protocol specification, section 2.2): a load balancer in front of the
// relay prefixes every connection with a binary header naming the client it
// accepted. Only v2 is spoken; the text v1 form is refused like any other
// bad header.
//
//	offset 0   12-byte signature \r\n\r\n\x00\r\nQUIT\n
//	offset 12  version (high nibble, must be 2) | command (low: 0 LOCAL, 1 PROXY)
//	offset 13  family (high: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) | transport (low: 1 STREAM)
//	offset 14  big-endian length of what follows: addresses, then TLVs
//	offset 16  TCP4: src 4, dst 4, src port 2, dst port 2 (12 bytes)
//	           TCP6: src 16, dst 16, src port 2, dst port 2 (36 bytes)
package proxyproto

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

const (
	proxySigLen    = 12
	proxyFixedLen  = 16  // signature + version/command + family + length
	maxProxyHeader = 536 // the whole header; the spec's own reasonable bound (one minimal TCP MSS)

	proxyCmdLocal = 0x0
	proxyCmdProxy = 0x1

	proxyUnspec = 0x00 // family UNSPEC, transport UNSPEC
	proxyTCP4   = 0x11 // INET, STREAM
	proxyTCP6   = 0x21 // INET6, STREAM
)

var proxySig = [proxySigLen]byte{'\r', '\n', '\r', '\n', 0x00, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'}

// The errors ParseV2 refuses a header with, one per check; a header is
// judged by the first check its bytes fail.
var (
	ErrSignature = errors.New("proxy: not a PROXY protocol v2 signature")
	ErrVersion   = errors.New("proxy: version is not 2")
	ErrCommand   = errors.New("proxy: unknown command")
	ErrFamily    = errors.New("proxy: family is not TCP over IPv4 or IPv6")
	ErrTooLong   = errors.New("proxy: header longer than 536 bytes")
	ErrTooShort  = errors.New("proxy: length too short for the address family")
)

// ParseV2 parses the PROXY v2 header at the start of b. It returns the
// header's length n and the source address and port it names, or n == 0 and
// no error when b is a valid prefix that needs more bytes. src is the zero
// AddrPort (its Addr not valid) when
// the header says to use the socket's own address (the LOCAL command, or
// PROXY with the UNSPEC family). Every check is made as soon as the bytes it
// needs are present: a connection that does not start with the signature is
// refused on its first byte.
func ParseV2(b []byte) (src netip.AddrPort, n int, err error) {
	sig := min(len(b), proxySigLen)
	if string(b[:sig]) != string(proxySig[:sig]) {
		return netip.AddrPort{}, 0, ErrSignature
	}
	if len(b) <= proxySigLen {
		return netip.AddrPort{}, 0, nil
	}
	verCmd := b[12]
	if verCmd>>4 != 2 {
		return netip.AddrPort{}, 0, ErrVersion
	}
	cmd := verCmd & 0x0f
	if cmd != proxyCmdLocal && cmd != proxyCmdProxy {
		return netip.AddrPort{}, 0, ErrCommand
	}
	if len(b) < 14 {
		return netip.AddrPort{}, 0, nil
	}
	fam := b[13]
	need := 0 // address bytes the family requires
	if cmd == proxyCmdProxy {
		switch fam {
		case proxyUnspec:
		case proxyTCP4:
			need = 12
		case proxyTCP6:
			need = 36
		default:
			return netip.AddrPort{}, 0, ErrFamily
		}
	} // LOCAL: the family and any addresses are ignored (spec 2.2)
	if len(b) < proxyFixedLen {
		return netip.AddrPort{}, 0, nil
	}
	total := proxyFixedLen + int(binary.BigEndian.Uint16(b[14:16]))
	if total > maxProxyHeader {
		return netip.AddrPort{}, 0, ErrTooLong
	}
	if total-proxyFixedLen < need {
		return netip.AddrPort{}, 0, ErrTooShort
	}
	if len(b) < total {
		return netip.AddrPort{}, 0, nil
	}
	if cmd == proxyCmdProxy {
		switch fam {
		case proxyTCP4:
			src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[16:20])), binary.BigEndian.Uint16(b[24:26]))
		case proxyTCP6:
			src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[16:32])).Unmap(), binary.BigEndian.Uint16(b[48:50]))
		}
	}
	return src, total, nil
}
