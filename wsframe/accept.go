package wsframe

import (
	"crypto/sha1"
	"encoding/base64"
)

const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AcceptKeySize is the length of a Sec-WebSocket-Accept value.
const AcceptKeySize = 28

// ValidKey reports whether key is a Sec-WebSocket-Key: the base64 encoding
// of 16 bytes.
func ValidKey(key []byte) bool {
	if len(key) != 24 {
		return false
	}
	var raw [18]byte
	n, err := base64.StdEncoding.Decode(raw[:], key)
	return err == nil && n == 16
}

// PutAcceptKey writes the Sec-WebSocket-Accept value for key into dst.
func PutAcceptKey(dst *[AcceptKeySize]byte, key []byte) {
	var buf [24 + len(acceptGUID)]byte
	n := copy(buf[:], key)
	n += copy(buf[n:], acceptGUID)
	sum := sha1.Sum(buf[:n])
	base64.StdEncoding.Encode(dst[:], sum[:])
}
