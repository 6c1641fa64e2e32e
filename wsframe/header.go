package wsframe

import (
	"encoding/binary"
	"errors"

	"github.com/gobwas/ws"
)

// MaxHeaderSize is the longest frame header: 2 fixed bytes, 8 bytes of
// extended length and a 4-byte mask.
const MaxHeaderSize = 14

// Protocol violations a client can commit in a frame header. Each one ends the
// connection with close code 1002.
var (
	ErrReservedBits    = errors.New("wsframe: reserved bits set")
	ErrReservedOpCode  = errors.New("wsframe: reserved opcode")
	ErrUnmasked        = errors.New("wsframe: client frame not masked")
	ErrControlTooLong  = errors.New("wsframe: control frame payload over 125 bytes")
	ErrControlFragment = errors.New("wsframe: fragmented control frame")
	ErrLengthEncoding  = errors.New("wsframe: payload length not minimally encoded or over 2^63")
)

// ParseHeader parses the frame header at the start of b. It returns the header
// and its size in bytes, or n == 0 and a nil error when b does not yet hold the
// whole header. It only decodes; CheckClient applies the rules a server imposes.
// b is not retained.
func ParseHeader(b []byte) (h ws.Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	n = 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, 0, nil
		}
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
		if h.Length < 126 {
			return h, 0, ErrLengthEncoding
		}
		n = 4
	case 127:
		if len(b) < 10 {
			return h, 0, nil
		}
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 || u <= 0xffff {
			return h, 0, ErrLengthEncoding
		}
		h.Length = int64(u)
		n = 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		if len(b) < n+4 {
			return h, 0, nil
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	return h, n, nil
}

// CheckClient reports whether a frame header sent by a client is allowed:
// masked, no reserved bits (no extension is ever negotiated), a known opcode,
// and control frames short and unfragmented.
func CheckClient(h ws.Header) error {
	switch {
	case h.Rsv != 0:
		return ErrReservedBits
	case h.OpCode.IsReserved():
		return ErrReservedOpCode
	case !h.Masked:
		return ErrUnmasked
	case h.OpCode.IsControl() && h.Length > 125:
		return ErrControlTooLong
	case h.OpCode.IsControl() && !h.Fin:
		return ErrControlFragment
	}
	return nil
}

// ServerHeaderSize is the size of an unmasked header for a payload of n bytes.
func ServerHeaderSize(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xffff:
		return 4
	default:
		return 10
	}
}

// AppendServerHeader appends the header of a final, unmasked frame with the
// given opcode and payload length: the only kind of frame a server sends.
func AppendServerHeader(dst []byte, op ws.OpCode, n int) []byte {
	b0 := 0x80 | byte(op)
	switch {
	case n < 126:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		return append(dst, b0, 127,
			byte(uint64(n)>>56), byte(uint64(n)>>48), byte(uint64(n)>>40), byte(uint64(n)>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}
