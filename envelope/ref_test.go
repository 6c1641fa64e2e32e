package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"unicode/utf8"
	"unsafe"
)

// refValid is what Valid must answer: encoding/json's syntax check plus
// UTF-8, which encoding/json does not check inside strings.
func refValid(b []byte) bool {
	return json.Valid(b) && utf8.Valid(b)
}

// refEnvelope is a binary's envelope as decoded by encoding/json.
type refEnvelope struct {
	connID    string
	frame     []byte // nil when absent or null
	closeCode uint16
	pushWake  []byte // nil when absent or null
}

// refScan decodes msg the way Scan is specified to, using only
// encoding/json: strict JSON, an object, keys matched exactly after escape
// decoding, the last occurrence of a key wins, and the first occurrence of a
// known key with the wrong type is the error.
func refScan(msg []byte) (refEnvelope, error) {
	var r refEnvelope
	if !refValid(msg) {
		return r, ErrInvalidJSON
	}
	dec := json.NewDecoder(bytes.NewReader(msg))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return r, ErrInvalidJSON
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return r, ErrNotObject
	}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return r, ErrInvalidJSON
		}
		key, ok := kt.(string)
		if !ok {
			return r, ErrInvalidJSON
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return r, ErrInvalidJSON
		}
		isNull := string(raw) == "null"
		switch key {
		case "conn_id":
			r.connID = ""
			if !isNull {
				if err := json.Unmarshal(raw, &r.connID); err != nil {
					return r, ErrConnIDType
				}
			}
		case "frame":
			r.frame = nil
			if !isNull {
				r.frame = append([]byte{}, raw...)
			}
		case "close_code":
			r.closeCode = 0
			if !isNull {
				var n int64
				if err := json.Unmarshal(raw, &n); err != nil || n < 0 || n > 65535 {
					return r, ErrCloseCodeType
				}
				r.closeCode = uint16(n)
			}
		case "push_wake":
			r.pushWake = nil
			if !isNull {
				if raw[0] != '{' {
					return r, ErrPushWakeType
				}
				r.pushWake = append([]byte{}, raw...)
			}
		}
	}
	switch {
	case r.connID == "" && r.pushWake == nil:
		return r, ErrNoTarget
	case r.connID != "" && r.frame == nil && r.closeCode == 0:
		return r, ErrNothingToDo
	}
	return r, nil
}

// maxLiveConnIDLen is the longest conn_id the relay hands out: "client-",
// a 128-byte server-id, "-" and 8 hex digits.
const maxLiveConnIDLen = len("client-") + 128 + 1 + 8

// couldBeConnID reports whether s could name a live phone: short enough and
// printable ASCII without quote or backslash (what a server-id may hold).
func couldBeConnID(s []byte) bool {
	if len(s) > maxLiveConnIDLen {
		return false
	}
	for _, c := range s {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func compact(t testing.TB, b []byte) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatalf("compact %q: %v", b, err)
	}
	return buf.String()
}

// checkScanAgainstRef scans msg and fails t unless Scan and refScan agree on
// the verdict and on every field. The decoded conn_id may differ only where
// neither side could name a live phone: Scan deliberately maps surrogate
// escapes to U+FFFD one by one and stops decoding absurdly long escaped
// conn_ids, and neither can matter for routing.
func checkScanAgainstRef(t testing.TB, msg []byte) {
	t.Helper()
	var e FromBinary
	err := e.Scan(msg)
	ref, refErr := refScan(msg)
	if !errors.Is(err, refErr) {
		t.Fatalf("Scan(%s) = %v, encoding/json reference says %v", short(msg), err, refErr)
	}
	if err != nil {
		return
	}
	if string(e.ConnID) != ref.connID && (couldBeConnID(e.ConnID) || couldBeConnID([]byte(ref.connID))) {
		t.Fatalf("Scan(%s) conn_id %s, reference %q", short(msg), short(e.ConnID), ref.connID)
	}
	if (len(e.ConnID) == 0) != (ref.connID == "") {
		t.Fatalf("Scan(%s) conn_id %s, reference %q", short(msg), short(e.ConnID), ref.connID)
	}
	if e.CloseCode != ref.closeCode {
		t.Fatalf("Scan(%s) close_code %d, reference %d", short(msg), e.CloseCode, ref.closeCode)
	}
	if (e.Frame == nil) != (ref.frame == nil) {
		t.Fatalf("Scan(%s) frame %s, reference %s", short(msg), short(e.Frame), short(ref.frame))
	}
	if e.Frame != nil {
		if got, want := compact(t, e.Frame), compact(t, ref.frame); got != want {
			t.Fatalf("Scan(%s) frame %s, reference %s", short(msg), short([]byte(got)), short([]byte(want)))
		}
		// Raw bytes, not a re-encoding: the frame is a window into msg.
		if !within(msg, e.Frame) {
			t.Fatalf("Scan(%s) frame is not a slice of the message", short(msg))
		}
	}
	if (e.PushWake == nil) != (ref.pushWake == nil) {
		t.Fatalf("Scan(%s) push_wake %s, reference %s", short(msg), short(e.PushWake), short(ref.pushWake))
	}
	if e.PushWake != nil && compact(t, e.PushWake) != compact(t, ref.pushWake) {
		t.Fatalf("Scan(%s) push_wake %s, reference %s", short(msg), short(e.PushWake), short(ref.pushWake))
	}
}

// within reports whether sub lies inside outer's bytes (not a copy).
func within(outer, sub []byte) bool {
	if len(sub) == 0 {
		return true
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(outer)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(sub)))
	return p >= lo && p+uintptr(len(sub)) <= lo+uintptr(len(outer))
}

// short quotes b for a failure message, eliding the middle of long inputs.
func short(b []byte) string {
	if len(b) <= 200 {
		return strconv.Quote(string(b))
	}
	return strconv.Quote(string(b[:100])) + fmt.Sprintf("...(%d bytes)...", len(b)-200) + strconv.Quote(string(b[len(b)-100:]))
}
