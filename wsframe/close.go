package wsframe

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// ErrBadClose is a close frame whose body is malformed: one byte long, a code
// no endpoint may send, or a reason that is not UTF-8.
var ErrBadClose = errors.New("wsframe: malformed close frame body")

// ParseCloseBody returns the status code of a close frame's payload, 0 when the
// payload is empty (the peer gave no code).
func ParseCloseBody(p []byte) (code uint16, err error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) == 1 {
		return 0, ErrBadClose
	}
	code = binary.BigEndian.Uint16(p)
	if !SendableCloseCode(code) || !utf8.Valid(p[2:]) {
		return 0, ErrBadClose
	}
	return code, nil
}

// SendableCloseCode reports whether code may appear in a close frame on the
// wire (RFC 6455 section 7.4): 1000-1003, 1007-1014 and 3000-4999.
func SendableCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// AppendClose appends a whole server close frame. code 0 writes an empty body.
// reason must be at most 123 bytes.
func AppendClose(dst []byte, code uint16, reason string) []byte {
	if code == 0 {
		return AppendServerHeader(dst, ws.OpClose, 0)
	}
	dst = AppendServerHeader(dst, ws.OpClose, 2+len(reason))
	dst = append(dst, byte(code>>8), byte(code))
	return append(dst, reason...)
}
