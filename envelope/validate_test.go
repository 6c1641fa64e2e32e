package envelope

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/rand"
	"strings"
	"testing"
)

// validCases is a broad table of JSON texts and whether each is one valid
// JSON value. Every row is also checked against encoding/json, so a wrong
// expectation here fails as loudly as a wrong validator.
var validCases = []struct {
	in   string
	want bool
}{
	// Literals.
	{`true`, true}, {`false`, true}, {`null`, true},
	{`tru`, false}, {`nul`, false}, {`fals`, false}, {`truee`, false},
	{`True`, false}, {`NULL`, false}, {`nulll`, false}, {`t`, false},
	{`undefined`, false}, {`NaN`, false}, {`Infinity`, false}, {`-Infinity`, false},

	// Numbers.
	{`0`, true}, {`-0`, true}, {`1`, true}, {`-1`, true}, {`123456789`, true},
	{`0.5`, true}, {`-0.5`, true}, {`1.25`, true}, {`1e5`, true}, {`1E5`, true},
	{`1e+5`, true}, {`1e-5`, true}, {`0e0`, true}, {`-0.0e-0`, true}, {`1.5E+10`, true},
	{`12345678901234567890123456789012345678901234567890`, true},
	{`1e999999`, true}, {`-1.0e-999999`, true},
	{`01`, false}, {`-01`, false}, {`00`, false}, {`+1`, false}, {`-`, false},
	{`.5`, false}, {`1.`, false}, {`1.e5`, false}, {`1e`, false}, {`1e+`, false},
	{`1e-`, false}, {`1E`, false}, {`--1`, false}, {`-a`, false}, {`1ee5`, false},
	{`1.2.3`, false}, {`0x10`, false}, {`1_000`, false}, {`- 1`, false},
	{`1 2`, false}, {`0.`, false}, {`-.5`, false}, {`1e5.5`, false}, {`١`, false},

	// Strings.
	{`""`, true}, {`"abc"`, true}, {`"a b"`, true},
	{`"\""`, true}, {`"\\"`, true}, {`"\/"`, true}, {`"\b\f\n\r\t"`, true},
	{`"\u0000"`, true}, {`"\u00e9"`, true}, {`"\uABCD"`, true}, {`"\uabcd"`, true},
	{`"\ud800"`, true}, {`"\udc00\ud800"`, true}, {`"\ud83d\ude00"`, true},
	{"\"\u00e9\u4e16\U0001F600\"", true}, {"\"\u2028\u2029\"", true}, {"\"\x7f\"", true},
	{"\"\xef\xbf\xbd\"", true}, // U+FFFD itself, correctly encoded
	{`"`, false}, {`"abc`, false}, {`abc"`, false}, {`'abc'`, false},
	{`"\"`, false}, {`"\a"`, false}, {`"\x41"`, false}, {`"\U0041"`, false}, {`"\0"`, false},
	{`"\u"`, false}, {`"\u12"`, false}, {`"\u123"`, false}, {`"\u123g"`, false},
	{`"\uGHIJ"`, false}, {`"\u12"x`, false}, {`"\`, false}, {`"\u`, false}, {`"\u00`, false},
	{"\"\x00\"", false}, {"\"\x01\"", false}, {"\"\x1f\"", false}, {"\"\t\"", false},
	{"\"\n\"", false}, {"\"\r\"", false}, {"\"a\nb\"", false},
	// Invalid UTF-8 inside strings: encoding/json.Valid lets these through,
	// Valid must not (RFC 8259 section 8.1).
	{"\"\xff\"", false}, {"\"\xfe\"", false}, {"\"\x80\"", false}, {"\"\xc3\"", false},
	{"\"\xc3\x28\"", false}, {"\"\xe2\x82\"", false}, {"\"\xf0\x9f\x98\"", false},
	{"\"\xc0\xaf\"", false},         // overlong '/'
	{"\"\xe0\x80\xaf\"", false},     // overlong '/'
	{"\"\xed\xa0\x80\"", false},     // UTF-8 encoded surrogate
	{"\"\xf4\x90\x80\x80\"", false}, // above U+10FFFF
	{"\"\xf8\x88\x80\x80\x80\"", false},
	{"[\"ok\",\"\xff\"]", false}, {"{\"\xff\":1}", false},
	// Invalid UTF-8 outside strings.
	{"\xff", false}, {"1\xff", false}, {"[1,\xff]", false},
	{"\xef\xbb\xbf{}", false}, // byte-order mark

	// Arrays.
	{`[]`, true}, {`[1]`, true}, {`[1,2]`, true}, {`[[]]`, true}, {`[[],[]]`, true},
	{`[1,"a",true,null,{},[]]`, true}, {`[ ]`, true}, {` [ 1 , 2 ] `, true},
	{`[`, false}, {`]`, false}, {`[1`, false}, {`[1,`, false}, {`[1,]`, false},
	{`[,1]`, false}, {`[,]`, false}, {`[1 2]`, false}, {`[1;2]`, false}, {`[}`, false},
	{`[]]`, false}, {`[[]`, false}, {`[1]]`, false}, {`[1]x`, false}, {`[1][2]`, false},
	{`[1:2]`, false}, {`[-]`, false}, {`[01]`, false}, {`[tru]`, false}, {`[1,,2]`, false},

	// Objects.
	{`{}`, true}, {`{"a":1}`, true}, {`{"a":1,"b":2}`, true}, {`{"":null}`, true},
	{`{"a":{"b":{"c":[]}}}`, true}, {`{"a":1,"a":2}`, true}, {` { "a" : 1 } `, true},
	{`{"\u0041":1}`, true}, {`{"a":[1,{"b":"c"}]}`, true},
	{`{`, false}, {`}`, false}, {`{"a"}`, false}, {`{"a":}`, false}, {`{"a" 1}`, false},
	{`{"a":1,}`, false}, {`{,}`, false}, {`{,"a":1}`, false}, {`{a:1}`, false},
	{`{'a':1}`, false}, {`{1:1}`, false}, {`{null:1}`, false}, {`{"a":1 "b":2}`, false},
	{`{"a":1;"b":2}`, false}, {`{"a"::1}`, false}, {`{"a":1]`, false}, {`{"a":[1}`, false},
	{`{"a":1}}`, false}, {`{"a":1}{}`, false}, {`{"a":1},`, false}, {`{"a",1}`, false},
	{`{"a":1,"b"}`, false}, {`{"a":1,"b":}`, false}, {`{"a":{"b":1}`, false},

	// Whitespace: only space, tab, LF and CR.
	{" \t\r\n1 \t\r\n", true}, {"[\n1\r,\t2 ]", true}, {"{\n\"a\"\t:\r1\n}", true},
	{"", false}, {" ", false}, {"\n\t", false},
	{"\f1", false}, {"1\f", false}, {"\v1", false}, {"\u00a01", false}, {"[1,\u00a02]", false},
	{"1\x00", false}, {"\x001", false},

	// Trailing garbage and more than one value: the phone-side injections.
	{`1,"conn_id":"client-other-00000000"`, false},
	{`1, "conn_id": "client-other-00000000"`, false},
	{`null,"conn_id":"client-other-00000000"`, false},
	{`{"a":1}}`, false},
	{`{"a":1},"conn_id":"client-other-00000000"`, false},
	{`{"a":1}},"conn_id":"client-other-00000000","x":{`, false},
	{`"x"garbage`, false}, {`"x" garbage`, false}, {`"x""y"`, false}, {`"x",`, false},
	{`"x"}`, false}, {`"x"]`, false}, {`1}`, false}, {`[1]]`, false},
	{`"x\"}, \"conn_id\": \"client-other-00000000"`, true}, // all inside one string: harmless
	{`"x"` + "\x00", false}, {`true false`, false}, {`nullnull`, false}, {`11 `, true},
	{`"\","conn_id":"client-other-00000000"}`, false},
}

func TestValidTable(t *testing.T) {
	for _, c := range validCases {
		if got := Valid([]byte(c.in)); got != c.want {
			t.Errorf("Valid(%q) = %v, want %v", c.in, got, c.want)
		}
		if ref := refValid([]byte(c.in)); ref != c.want {
			t.Errorf("table row %q: encoding/json+utf8 says %v, row says %v", c.in, ref, c.want)
		}
	}
}

// Every prefix of a valid document but the whole is invalid, except where
// the prefix is itself a complete number ("12" of "123").
func TestValidPrefixes(t *testing.T) {
	for _, c := range validCases {
		if !c.want {
			continue
		}
		for i := 0; i <= len(c.in); i++ {
			p := []byte(c.in[:i])
			if got, want := Valid(p), refValid(p); got != want {
				t.Errorf("Valid(%q) = %v, reference %v", p, got, want)
			}
		}
	}
}

// A phone's frame, once valid, is spliced verbatim. Whatever the frame, the
// binary must see exactly two keys and the phone's own conn_id.
func TestValidFrameCannotForgeConnID(t *testing.T) {
	const connID = "client-srv-0123abcd"
	for _, c := range validCases {
		frame := []byte(c.in)
		if !Valid(frame) {
			continue
		}
		env := AppendToBinary(nil, connID, frame)
		checkSpliced(t, env, connID, frame)
	}
}

func checkSpliced(t *testing.T, env []byte, connID string, frame []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(env))
	var keys []string
	var got struct {
		ConnID string          `json:"conn_id"`
		Frame  json.RawMessage `json:"frame"`
	}
	if err := json.Unmarshal(env, &got); err != nil {
		t.Fatalf("envelope %q is not JSON: %v", env, err)
	}
	if tok, _ := dec.Token(); tok != json.Delim('{') {
		t.Fatalf("envelope %q is not an object", env)
	}
	for dec.More() {
		k, _ := dec.Token()
		keys = append(keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("envelope %q: %v", env, err)
		}
	}
	if strings.Join(keys, ",") != "conn_id,frame" {
		t.Fatalf("envelope %q has keys %v", env, keys)
	}
	if got.ConnID != connID {
		t.Fatalf("envelope %q names %q, want %q", env, got.ConnID, connID)
	}
	if compact(t, got.Frame) != compact(t, frame) {
		t.Fatalf("envelope %q frame %s, want %s", env, got.Frame, frame)
	}
}

func nest(open, close string, depth int) string {
	return strings.Repeat(open, depth) + strings.Repeat(close, depth)
}

func TestValidDepth(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want bool
	}{
		{"arrays at limit", nest("[", "]", MaxDepth), true},
		{"arrays over limit", nest("[", "]", MaxDepth+1), false},
		{"arrays far over limit", nest("[", "]", 3*MaxDepth), false},
		{"objects at limit exactly", strings.Repeat(`{"a":`, MaxDepth-1) + "{}" + strings.Repeat("}", MaxDepth-1), true},
		{"objects over limit", strings.Repeat(`{"a":`, MaxDepth) + "{}" + strings.Repeat("}", MaxDepth), false},
		{"value at limit", strings.Repeat("[", MaxDepth) + "1" + strings.Repeat("]", MaxDepth), true},
		{"value over limit", strings.Repeat("[", MaxDepth+1) + "1" + strings.Repeat("]", MaxDepth+1), false},
		{"unclosed at limit", strings.Repeat("[", MaxDepth), false},
		{"one closer short", strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth-1), false},
		{"one closer extra", strings.Repeat("[", 50) + strings.Repeat("]", 51), false},
	}
	for _, c := range cases {
		b := []byte(c.in)
		if got := Valid(b); got != c.want {
			t.Errorf("%s: Valid = %v, want %v", c.name, got, c.want)
		}
		if ref := refValid(b); ref != c.want {
			t.Errorf("%s: encoding/json says %v, row says %v", c.name, ref, c.want)
		}
	}
}

// The validator tracks object/array per level in a bit stack; a wrong
// closer must be caught at every depth, including the word boundaries.
func TestValidMixedNestingClosers(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, depth := range []int{1, 2, 63, 64, 65, 127, 128, 129, 1000, MaxDepth - 1, MaxDepth} {
		kinds := make([]bool, depth) // true: object
		var open, close strings.Builder
		for i := range kinds {
			kinds[i] = rng.Intn(2) == 0
			if kinds[i] {
				open.WriteString(`{"k":`)
			} else {
				open.WriteString(`[0,`)
			}
		}
		for i := depth - 1; i >= 0; i-- {
			if kinds[i] {
				close.WriteByte('}')
			} else {
				close.WriteByte(']')
			}
		}
		good := open.String() + "1" + close.String()
		if !Valid([]byte(good)) || !refValid([]byte(good)) {
			t.Fatalf("depth %d: well-formed document refused (Valid %v)", depth, Valid([]byte(good)))
		}
		// Swap one closer for the other kind at a few levels.
		cl := []byte(close.String())
		for _, at := range []int{0, len(cl) / 2, len(cl) - 1, 63 % len(cl), 64 % len(cl)} {
			bad := append([]byte{}, cl...)
			if bad[at] == '}' {
				bad[at] = ']'
			} else {
				bad[at] = '}'
			}
			doc := []byte(open.String() + "1" + string(bad))
			if Valid(doc) {
				t.Errorf("depth %d: wrong closer at %d accepted", depth, at)
			}
			if refValid(doc) {
				t.Fatalf("depth %d: reference accepted wrong closer", depth)
			}
		}
	}
}

// Random documents built from JSON-ish tokens, most of them invalid, all
// compared with encoding/json: a cheap, deterministic stand-in for fuzzing.
func TestValidRandomTokens(t *testing.T) {
	tokens := []string{
		"{", "}", "[", "]", ",", ":", " ", "\n", `"`, `"a"`, `"\u00e9"`, `"\x"`, `\`,
		"0", "-", "1", "9", ".", "e", "+", "true", "null", "fals", "\xff", "\xc3\xa9", "\x00", "x",
	}
	rng := rand.New(rand.NewSource(2))
	var b []byte
	agreeTrue := 0
	for n := 0; n < 50000; n++ {
		b = b[:0]
		for k := rng.Intn(12); k >= 0; k-- {
			b = append(b, tokens[rng.Intn(len(tokens))]...)
		}
		got, want := Valid(b), refValid(b)
		if got != want {
			t.Fatalf("Valid(%q) = %v, reference %v", b, got, want)
		}
		if got {
			agreeTrue++
		}
	}
	if agreeTrue < 100 {
		t.Fatalf("only %d valid documents generated: the generator is too weak", agreeTrue)
	}
}

// All short strings over a small alphabet, compared with encoding/json.
func TestValidExhaustiveShort(t *testing.T) {
	const alphabet = "{}[]\":,0-1.e \\u"
	buf := make([]byte, 0, 4)
	var walk func(n int)
	walk = func(n int) {
		if got, want := Valid(buf), refValid(buf); got != want {
			t.Fatalf("Valid(%q) = %v, reference %v", buf, got, want)
		}
		if n == 0 {
			return
		}
		for i := 0; i < len(alphabet); i++ {
			buf = append(buf, alphabet[i])
			walk(n - 1)
			buf = buf[:len(buf)-1]
		}
	}
	walk(4)
}

func TestValidAllocs(t *testing.T) {
	inputs := [][]byte{
		[]byte(`{"type":"msg","body":"h\u00e9llo \ud83d\ude00","n":[1,2.5e3,-0,true,false,null],"o":{"k":{}}}`),
		[]byte(nest("[", "]", MaxDepth)),
		[]byte(nest("[", "]", MaxDepth+1)),
		[]byte("\"\xff\""),
	}
	for _, in := range inputs {
		if n := testing.AllocsPerRun(100, func() { Valid(in) }); n != 0 {
			t.Errorf("Valid(%.20q...) allocates %v times", in, n)
		}
	}
}

func TestPlain8EveryByteEveryLane(t *testing.T) {
	for v := 0; v < 256; v++ {
		want := v >= 0x20 && v < 0x80 && v != '"' && v != '\\'
		for lane := 0; lane < 8; lane++ {
			w := []byte("aaaaaaaa")
			w[lane] = byte(v)
			if got := plain8(binary.LittleEndian.Uint64(w)); got != want {
				t.Fatalf("byte %#x in lane %d: plain8 = %v, want %v", v, lane, got, want)
			}
		}
	}
}
