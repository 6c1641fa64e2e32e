package envelope

import "unicode/utf8"

// MaxDepth is the deepest nesting of arrays and objects accepted, the same
// limit encoding/json applies, so the reference relay and Switchboard agree on
// which frames are JSON. The validator is iterative: depth costs a bit of a
// fixed stack array, never a goroutine stack frame.
const MaxDepth = 10000

// Valid reports whether b is exactly one JSON value (RFC 8259, valid UTF-8),
// optionally surrounded by whitespace. It does not allocate.
func Valid(b []byte) bool {
	i := skipSpace(b, 0)
	end, ok := skipValue(b, i, MaxDepth)
	return ok && skipSpace(b, end) == len(b)
}

// skipValue returns the index just past the JSON value starting at b[i],
// validating everything inside it. The value may nest at most maxDepth
// levels of arrays and objects (at most MaxDepth).
func skipValue(b []byte, i, maxDepth int) (int, bool) {
	var stack [MaxDepth/64 + 1]uint64 // bit set: this level is an object
	depth := 0
	for {
		// A value starts at b[i].
		if i >= len(b) {
			return i, false
		}
		ok := true
		switch c := b[i]; {
		case c == '{' || c == '[':
			if depth >= maxDepth {
				return i, false
			}
			isObj := c == '{'
			if isObj {
				stack[depth/64] |= 1 << (depth % 64)
			} else {
				stack[depth/64] &^= 1 << (depth % 64)
			}
			depth++
			i = skipSpace(b, i+1)
			closer := byte(']')
			if isObj {
				closer = '}'
			}
			if i < len(b) && b[i] == closer {
				depth--
				i++
				break
			}
			if isObj {
				if i, ok = skipKey(b, i); !ok {
					return i, false
				}
			}
			continue
		case c == '"':
			i, ok = skipString(b, i)
		case c == 't':
			i, ok = skipLiteral(b, i, "true")
		case c == 'f':
			i, ok = skipLiteral(b, i, "false")
		case c == 'n':
			i, ok = skipLiteral(b, i, "null")
		default:
			i, ok = skipNumber(b, i)
		}
		if !ok {
			return i, false
		}
		// After a value: close containers or move to the next element.
		for {
			if depth == 0 {
				return i, true
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return i, false
			}
			isObj := stack[(depth-1)/64]&(1<<((depth-1)%64)) != 0
			if b[i] == ',' {
				i = skipSpace(b, i+1)
				if isObj {
					if i, ok = skipKey(b, i); !ok {
						return i, false
					}
				}
				break
			}
			if (isObj && b[i] == '}') || (!isObj && b[i] == ']') {
				depth--
				i++
				continue
			}
			return i, false
		}
	}
}

// skipKey consumes `"key" :` and the whitespace after the colon.
func skipKey(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	i, ok := skipString(b, i)
	if !ok {
		return i, false
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return i, false
	}
	return skipSpace(b, i+1), true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func skipLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// skipString consumes a string starting at the quote b[i].
func skipString(b []byte, i int) (int, bool) {
	i++
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			return i + 1, true
		case c == '\\':
			if i+1 >= len(b) {
				return i, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(b)-i < 6 || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return i, false
				}
				i += 6
			default:
				return i, false
			}
		case c < 0x20:
			return i, false
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size <= 1 {
				return i, false
			}
			i += size
		}
	}
	return i, false
}

func skipNumber(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = skipDigits(b, i)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := skipDigits(b, i+1)
		if j == i+1 {
			return i, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := skipDigits(b, i)
		if j == i {
			return i, false
		}
		i = j
	}
	return i, true
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}
