package main

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Every phone frame is a JSON object of exactly the requested size:
//
//	{"c":<phone id>,"p":"<padding>","s":<sequence>}
//
// Keys are sorted, ASCII only, no whitespace and nothing a JSON encoder
// would escape, so a relay that re-encodes the inner frame (the reference
// compacts and HTML-escapes it) still hands back the same bytes. The padding
// is derived from the sequence number, so a reply is verified by rebuilding
// the expected frame from (phone id, sequence) and comparing bytes: content,
// routing (id) and per-phone order (sequence) in one check, no allocation.

const (
	payloadHead = `{"c":`
	payloadPad  = `,"p":"`
	payloadSeq  = `","s":`
	// minPayload fits the largest ids and sequence numbers (20 digits each).
	minPayload = len(payloadHead) + len(payloadPad) + len(payloadSeq) + 1 + 2*20
	// maxPayload is the protocol's largest inbound message.
	maxPayload = 262144
)

// padAlphabet is repeated so any window of it can be sliced directly.
var padAlphabet = func() []byte {
	b := make([]byte, maxPayload+26)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}()

// appendPayload appends the frame for (id, seq) of exactly size bytes
// (size >= minPayload).
func appendPayload(dst []byte, id int64, seq uint64, size int) []byte {
	start := len(dst)
	dst = append(dst, payloadHead...)
	dst = strconv.AppendInt(dst, id, 10)
	dst = append(dst, payloadPad...)
	padAt := len(dst)
	// Tail length: `","s":` + digits + `}`.
	tail := len(payloadSeq) + digits(seq) + 1
	pad := size - (padAt - start) - tail
	off := int(seq % 26)
	dst = append(dst, padAlphabet[off:off+pad]...)
	dst = append(dst, payloadSeq...)
	dst = strconv.AppendUint(dst, seq, 10)
	return append(dst, '}')
}

func digits(v uint64) int {
	n := 1
	for v >= 10 {
		v /= 10
		n++
	}
	return n
}

// parsePayload reads the phone id and sequence number from a frame in the
// exact form appendPayload writes.
func parsePayload(b []byte) (id int64, seq uint64, ok bool) {
	if !bytes.HasPrefix(b, []byte(payloadHead)) || len(b) < minPayload-40 || b[len(b)-1] != '}' {
		return 0, 0, false
	}
	rest := b[len(payloadHead):]
	i := 0
	for i < len(rest) && i < 20 && rest[i] >= '0' && rest[i] <= '9' {
		id = id*10 + int64(rest[i]-'0')
		i++
	}
	if i == 0 || !bytes.HasPrefix(rest[i:], []byte(payloadPad)) {
		return 0, 0, false
	}
	end := len(b) - 1 // the closing brace
	j := end
	for j > 0 && end-j < 20 && b[j-1] >= '0' && b[j-1] <= '9' {
		j--
	}
	if j == end || j < len(payloadSeq) || string(b[j-len(payloadSeq):j]) != payloadSeq {
		return 0, 0, false
	}
	for _, c := range b[j:end] {
		seq = seq*10 + uint64(c-'0')
	}
	return id, seq, true
}

// verifier checks echoed frames for one phone; scratch is reused.
type verifier struct {
	id      int64
	size    int
	scratch []byte
}

// check returns the frame's sequence number and "" when b is exactly the
// frame this phone sent with that sequence number, or an error kind.
// reencoded reports a frame that is equal only after JSON decoding (a relay
// that re-encodes differently); it costs allocations, the exact path none.
func (v *verifier) check(b []byte) (seq uint64, kind string, reencoded bool) {
	id, seq, ok := parsePayload(b)
	if ok {
		if id != v.id {
			return seq, "wrong_phone", false
		}
		v.scratch = appendPayload(v.scratch[:0], v.id, seq, v.size)
		if bytes.Equal(v.scratch, b) {
			return seq, "", false
		}
	}
	var f struct {
		C *int64  `json:"c"`
		P *string `json:"p"`
		S *uint64 `json:"s"`
	}
	if err := json.Unmarshal(b, &f); err != nil || f.C == nil || f.P == nil || f.S == nil {
		return 0, "malformed_reply", false
	}
	if *f.C != v.id {
		return *f.S, "wrong_phone", false
	}
	v.scratch = appendPayload(v.scratch[:0], v.id, *f.S, v.size)
	head := len(payloadHead) + digits(uint64(v.id)) + len(payloadPad)
	wantPad := v.scratch[head : len(v.scratch)-len(payloadSeq)-digits(*f.S)-1]
	if *f.P != string(wantPad) {
		return *f.S, "content_mismatch", false
	}
	return *f.S, "", true
}
