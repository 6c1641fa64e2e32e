package envelope

import (
	"encoding/binary"
	"sync"
	"unicode/utf8"
)

// deepStacks holds full-depth container stacks for deeply nested input.
var deepStacks = sync.Pool{New: func() any { return new([MaxDepth/64 + 1]uint64) }}

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
	var n nesting
	end, ok := n.skip(b, i, maxDepth)
	if n.deep != nil {
		deepStacks.Put(n.deep)
	}
	return end, ok
}

// nesting holds one bit per open container, set for an object. The first
// 128 levels live in a small array; deeper input (rare, and hostile more
// often than not) borrows a full-depth array from a pool. A 1.2 KB array on
// every call made each fresh read-task goroutine grow its stack.
type nesting struct {
	small [2]uint64
	deep  *[MaxDepth/64 + 1]uint64
}

func (n *nesting) skip(b []byte, i, maxDepth int) (int, bool) {
	stack := n.small[:]
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
			if depth == len(stack)*64 {
				n.deep = deepStacks.Get().(*[MaxDepth/64 + 1]uint64)
				copy(n.deep[:], stack)
				stack = n.deep[:]
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
		// Eight plain bytes at a time: none is a quote, a backslash, a
		// control byte or part of a multi-byte sequence.
		for len(b)-i >= 8 && plain8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		if i >= len(b) {
			break
		}
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

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plain8 reports whether none of the eight bytes in x needs a closer look
// inside a string: each is in 0x20..0x7f and is neither '"' nor '\\'.
// It uses the classic "has a byte less than n" bit trick, once for control
// bytes and once each for the two special bytes (x^v has a zero byte where
// x has v).
func plain8(x uint64) bool {
	q := x ^ (ones * '"')
	s := x ^ (ones * '\\')
	lt := (x - ones*0x20) &^ x
	zq := (q - ones) &^ q
	zs := (s - ones) &^ s
	return (lt|zq|zs|x)&highs == 0
}
