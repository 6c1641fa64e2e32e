package envelope

import (
	"bytes"
	"errors"
	"unicode/utf8"
)

// Why a binary's envelope was dropped. Each is counted under its own reason.
var (
	ErrInvalidJSON   = errors.New("envelope: not valid JSON")
	ErrNotObject     = errors.New("envelope: not a JSON object")
	ErrConnIDType    = errors.New("envelope: conn_id is not a string")
	ErrCloseCodeType = errors.New("envelope: close_code is not an integer in 0..65535")
	ErrPushWakeType  = errors.New("envelope: push_wake is not an object")
	ErrNoTarget      = errors.New("envelope: neither conn_id nor push_wake")
	ErrNothingToDo   = errors.New("envelope: conn_id with neither frame nor close_code")
)

// maxConnIDLen bounds a decoded conn_id: "client-" + 128-byte server-id + "-"
// + 8 hex digits is 144; anything longer cannot name a live phone.
const maxConnIDLen = 160

// FromBinary is one envelope sent by a binary, scanned in place. Its slices
// point into the message given to Scan (or, for an escaped conn_id, into the
// FromBinary itself) and are valid while both are.
type FromBinary struct {
	ConnID    []byte // target phone; empty when absent, null or ""
	Frame     []byte // raw bytes of "frame"; nil when absent or null
	CloseCode uint16 // 0 when absent, null or 0
	PushWake  []byte // raw bytes of the "push_wake" object; nil when absent or null

	connIDBuf [maxConnIDLen]byte
}

// Scan parses msg, one whole message from a binary. Keys other than the four
// it knows are skipped (but must be valid JSON); a repeated key takes its last
// value, as encoding/json does. It does not allocate.
func (e *FromBinary) Scan(msg []byte) error {
	e.ConnID, e.Frame, e.CloseCode, e.PushWake = nil, nil, 0, nil
	i := skipSpace(msg, 0)
	if i >= len(msg) || msg[i] != '{' {
		if Valid(msg) {
			return ErrNotObject
		}
		return ErrInvalidJSON
	}
	i = skipSpace(msg, i+1)
	if i < len(msg) && msg[i] == '}' {
		i++
	} else {
		for {
			keyStart := i
			j, ok := skipKey(msg, i)
			if !ok {
				return ErrInvalidJSON
			}
			keyEnd, _ := skipString(msg, keyStart)
			var keyBuf [16]byte
			key := decodeKey(msg[keyStart+1:keyEnd-1], &keyBuf)
			// The object is itself one level deep, so its values may nest
			// one level less than a whole message (as in encoding/json).
			end, ok := skipValue(msg, j, MaxDepth-1)
			if !ok {
				return ErrInvalidJSON
			}
			if err := e.set(key, msg[j:end]); err != nil {
				if Valid(msg) {
					return err
				}
				return ErrInvalidJSON
			}
			i = skipSpace(msg, end)
			if i < len(msg) && msg[i] == ',' {
				i = skipSpace(msg, i+1)
				continue
			}
			if i < len(msg) && msg[i] == '}' {
				i++
				break
			}
			return ErrInvalidJSON
		}
	}
	if skipSpace(msg, i) != len(msg) {
		return ErrInvalidJSON
	}
	switch {
	case len(e.ConnID) == 0 && e.PushWake == nil:
		return ErrNoTarget
	case len(e.ConnID) > 0 && e.Frame == nil && e.CloseCode == 0:
		return ErrNothingToDo
	}
	return nil
}

func (e *FromBinary) set(key, v []byte) error {
	isNull := string(v) == "null"
	switch string(key) {
	case "conn_id":
		switch {
		case isNull:
			e.ConnID = nil
		case v[0] != '"':
			return ErrConnIDType
		default:
			e.ConnID = e.unquote(v)
		}
	case "frame":
		e.Frame = v
		if isNull {
			e.Frame = nil
		}
	case "close_code":
		if isNull {
			e.CloseCode = 0
			return nil
		}
		code, ok := parseUint16(v)
		if !ok {
			return ErrCloseCodeType
		}
		e.CloseCode = code
	case "push_wake":
		switch {
		case isNull:
			e.PushWake = nil
		case v[0] != '{':
			return ErrPushWakeType
		default:
			e.PushWake = v
		}
	}
	return nil
}

// parseUint16 accepts an integer literal in 0..65535 ("-0" included, as
// encoding/json does); fractions and exponents are refused like
// encoding/json refuses them for an int field.
func parseUint16(v []byte) (uint16, bool) {
	if len(v) > 0 && v[0] == '-' {
		return 0, string(v) == "-0"
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
		if n > 0xffff {
			return 0, false
		}
	}
	return uint16(n), len(v) > 0
}

// unquote returns the contents of the validated string literal v, decoding
// escapes into e.connIDBuf only when there are any. A conn_id too long to be
// real decodes to a value that matches no phone.
func (e *FromBinary) unquote(v []byte) []byte {
	inner := v[1 : len(v)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner
	}
	out, ok := unescape(e.connIDBuf[:0], inner)
	if !ok {
		return e.connIDBuf[:] // too long to name a phone
	}
	return out
}

// decodeKey returns the validated key body raw with its escapes decoded into
// buf, since encoding/json matches decoded keys ("conn\u005fid" is conn_id).
// A key too long to be one Scan knows decodes to nil.
func decodeKey(raw []byte, buf *[16]byte) []byte {
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	out, ok := unescape(buf[:0], raw)
	if !ok {
		return nil
	}
	return out
}

// unescape appends the validated string body s to out with its escapes
// decoded, never growing out past its capacity: false when s does not fit.
func unescape(out, s []byte) ([]byte, bool) {
	for i := 0; i < len(s); {
		if len(out)+utf8.UTFMax > cap(out) {
			return out, false
		}
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch s[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := rune(hexVal(s[i+2])<<12 | hexVal(s[i+3])<<8 | hexVal(s[i+4])<<4 | hexVal(s[i+5]))
			out = utf8.AppendRune(out, r) // surrogates become U+FFFD: never part of a conn_id
			i += 6
			continue
		default: // '"', '\\', '/'
			out = append(out, s[i+1])
		}
		i += 2
	}
	return out, true
}

func hexVal(c byte) int {
	switch {
	case c >= 'a':
		return int(c-'a') + 10
	case c >= 'A':
		return int(c-'A') + 10
	}
	return int(c - '0')
}
