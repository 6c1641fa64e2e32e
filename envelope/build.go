package envelope

import "strconv"

const (
	toBinaryHead = `{"conn_id":"`
	toBinaryMid  = `","frame":`
	noticeMid    = `","close_code":`
)

// ToBinarySize is the length of the envelope AppendToBinary writes.
func ToBinarySize(connID string, frame []byte) int {
	return len(toBinaryHead) + len(connID) + len(toBinaryMid) + len(frame) + 1
}

// AppendToBinary appends {"conn_id":"<connID>","frame":<frame>} to dst.
// frame must already have passed Valid and connID must need no escaping (the
// relay makes conn_ids from bounded, quote-free server-ids and hex digits).
// frame is copied; the caller keeps ownership of both.
func AppendToBinary(dst []byte, connID string, frame []byte) []byte {
	dst = append(dst, toBinaryHead...)
	dst = append(dst, connID...)
	dst = append(dst, toBinaryMid...)
	dst = append(dst, frame...)
	return append(dst, '}')
}

// AppendCloseNotice appends {"conn_id":"<connID>","close_code":<code>}, the
// notice telling a binary that one of its phones went away.
func AppendCloseNotice(dst []byte, connID string, code uint16) []byte {
	dst = append(dst, toBinaryHead...)
	dst = append(dst, connID...)
	dst = append(dst, noticeMid...)
	dst = strconv.AppendUint(dst, uint64(code), 10)
	return append(dst, '}')
}

// CloseNoticeSize is the length of the notice AppendCloseNotice writes.
func CloseNoticeSize(connID string, code uint16) int {
	n := len(toBinaryHead) + len(connID) + len(noticeMid) + 1 + 1
	for ; code >= 10; code /= 10 {
		n++
	}
	return n
}
