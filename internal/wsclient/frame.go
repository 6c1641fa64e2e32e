package wsclient

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
)

// Opcodes and the FIN bit as they appear in a frame's first byte.
const (
	OpCont   byte = 0x0
	OpText   byte = 0x1
	OpBinary byte = 0x2
	OpClose  byte = 0x8
	OpPing   byte = 0x9
	OpPong   byte = 0xA
	Fin      byte = 0x80
)

// fixedMask masks every frame built on the allocation-free paths: a client
// must mask, but the mask protects nothing between a load generator and a
// relay, and drawing a random one per frame would cost a system call.
var fixedMask = [4]byte{0x1f, 0x2e, 0x3d, 0x4c}

// AppendFrame appends a frame whose first byte is b0, exactly as given (FIN,
// RSV bits, any opcode, valid or not), with the length minimally encoded and
// the payload masked with key; a nil key builds an unmasked frame, which a
// server must refuse from a client. payload must not share memory with
// dst's spare capacity.
func AppendFrame(dst []byte, b0 byte, key *[4]byte, payload []byte) []byte {
	var mbit byte
	if key != nil {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, b0, mbit|byte(n))
	case n <= 0xffff:
		dst = append(dst, b0, mbit|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, b0, mbit|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	if key == nil {
		return append(dst, payload...)
	}
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	for i := range payload {
		dst[start+i] ^= key[i&3]
	}
	return dst
}

// AppendMasked appends one final client frame with opcode op, masked with
// a fixed key. It allocates only when dst lacks room, so a caller reusing
// dst sends frames without allocating.
func AppendMasked(dst []byte, op byte, payload []byte) []byte {
	return AppendFrame(dst, Fin|op, &fixedMask, payload)
}

// Masked returns a new client frame masked with a fresh random key: fin sets
// the FIN bit, and op is the rest of the first byte (opcode, and RSV bits
// for frames a server must refuse). The caller owns the result.
func Masked(fin bool, op byte, payload []byte) []byte {
	var key [4]byte
	_, _ = rand.Read(key[:])
	return AppendFrame(nil, finBit(fin)|op, &key, payload)
}

// Unmasked is Masked without a mask: what a server must refuse from a client.
func Unmasked(fin bool, op byte, payload []byte) []byte {
	return AppendFrame(nil, finBit(fin)|op, nil, payload)
}

func finBit(fin bool) byte {
	if fin {
		return Fin
	}
	return 0
}

// Fragments splits msg into n masked frames, the first with opcode op and
// the rest continuations, FIN on the last; when n exceeds what msg divides
// into, the trailing fragments are empty. The caller owns the result.
func Fragments(op byte, msg []byte, n int) []byte {
	var out []byte
	step := (len(msg) + n - 1) / n
	for i := range n {
		lo, hi := min(i*step, len(msg)), min((i+1)*step, len(msg))
		fop := OpCont
		if i == 0 {
			fop = op
		}
		out = append(out, Masked(i == n-1, fop, msg[lo:hi])...)
	}
	return out
}

// CloseBody is a close frame's payload: the code, then the reason.
func CloseBody(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// ParseClose reads a close frame's payload; an empty one is code 1005, as
// the protocol has it for a close without a status.
func ParseClose(payload []byte) (code int, reason string, err error) {
	switch len(payload) {
	case 0:
		return 1005, "", nil
	case 1:
		return 0, "", errors.New("wsclient: close frame with a 1-byte body")
	}
	return int(binary.BigEndian.Uint16(payload)), string(payload[2:]), nil
}

// Frame is one frame as it came off the wire.
type Frame struct {
	Fin    bool
	RSV    byte // the three reserved bits, in place (0x70 of the first byte)
	Op     byte
	Masked bool // the payload has been unmasked already
	// Payload is the Client's read buffer: valid until its next read. Copy
	// it to keep it.
	Payload []byte
}

// CheckServer reports what a server frame may not do: set reserved bits
// (nothing was negotiated) or mask its payload.
func (f Frame) CheckServer() error {
	switch {
	case f.RSV != 0:
		return fmt.Errorf("wsclient: server frame with reserved bits %#x (op %#x)", f.RSV, f.Op)
	case f.Masked:
		return fmt.Errorf("wsclient: server frame is masked (op %#x)", f.Op)
	}
	return nil
}
