package envelope

import (
	"errors"
	"strings"
	"testing"
)

type scanWant struct {
	err    error
	connID string
	frame  *string // nil: Frame must be nil
	code   uint16
	push   *string // nil: PushWake must be nil
}

func str(s string) *string { return &s }

var scanCases = []struct {
	name string
	in   string
	want scanWant
}{
	// The everyday shapes.
	{"frame", `{"conn_id":"client-s-0123abcd","frame":{"t":"hi"}}`,
		scanWant{connID: "client-s-0123abcd", frame: str(`{"t":"hi"}`)}},
	{"frame then close", `{"conn_id":"c","frame":[1,2],"close_code":4421}`,
		scanWant{connID: "c", frame: str(`[1,2]`), code: 4421}},
	{"close only", `{"conn_id":"c","close_code":1000}`, scanWant{connID: "c", code: 1000}},
	{"close with null frame", `{"conn_id":"c","frame":null,"close_code":4421}`,
		scanWant{connID: "c", code: 4421}},
	{"push wake", `{"push_wake":{"platform":"fcm","token":"t"}}`,
		scanWant{push: str(`{"platform":"fcm","token":"t"}`)}},
	{"push wake null conn_id", `{"conn_id":null,"push_wake":{}}`, scanWant{push: str(`{}`)}},
	{"push wake empty conn_id", `{"conn_id":"","push_wake":{"a":1}}`, scanWant{push: str(`{"a":1}`)}},
	{"push wake with conn_id too", `{"conn_id":"c","push_wake":{},"frame":1}`,
		scanWant{connID: "c", frame: str(`1`), push: str(`{}`)}},
	{"push wake alone with conn_id", `{"conn_id":"c","push_wake":{}}`, scanWant{err: ErrNothingToDo}},
	{"key order free", `{"frame":"x","close_code":3000,"conn_id":"c"}`,
		scanWant{connID: "c", frame: str(`"x"`), code: 3000}},

	// Frame bytes exactly as they appeared, whitespace inside included.
	{"frame raw whitespace", "{\"conn_id\":\"c\",\"frame\": { \"a\" :\t[ 1 ,\n2 ] } }",
		scanWant{connID: "c", frame: str("{ \"a\" :\t[ 1 ,\n2 ] }")}},
	{"frame raw escapes", `{"conn_id":"c","frame":"\u003c\/x\u003e\n"}`,
		scanWant{connID: "c", frame: str(`"\u003c\/x\u003e\n"`)}},
	{"frame number kept verbatim", `{"conn_id":"c","frame":-1.50E+02}`,
		scanWant{connID: "c", frame: str(`-1.50E+02`)}},
	{"frame scalars", `{"conn_id":"c","frame":false}`, scanWant{connID: "c", frame: str(`false`)}},
	{"frame empty string", `{"conn_id":"c","frame":""}`, scanWant{connID: "c", frame: str(`""`)}},
	{"frame null is none", `{"conn_id":"c","frame":null}`, scanWant{err: ErrNothingToDo}},
	{"frame looks like an envelope", `{"conn_id":"c","frame":{"conn_id":"other","close_code":1}}`,
		scanWant{connID: "c", frame: str(`{"conn_id":"other","close_code":1}`)}},
	{"surrounding whitespace", " \r\n\t{ \"conn_id\" : \"c\" , \"frame\" : 1 }\n ",
		scanWant{connID: "c", frame: str(`1`)}},

	// close_code bounds and forms.
	{"close 0 is none", `{"conn_id":"c","close_code":0}`, scanWant{err: ErrNothingToDo}},
	{"close 0 with frame", `{"conn_id":"c","close_code":0,"frame":1}`, scanWant{connID: "c", frame: str(`1`)}},
	{"close -0", `{"conn_id":"c","close_code":-0,"frame":1}`, scanWant{connID: "c", frame: str(`1`)}},
	{"close null", `{"conn_id":"c","close_code":null,"frame":1}`, scanWant{connID: "c", frame: str(`1`)}},
	{"close 1", `{"conn_id":"c","close_code":1}`, scanWant{connID: "c", code: 1}},
	{"close 65535", `{"conn_id":"c","close_code":65535}`, scanWant{connID: "c", code: 65535}},
	{"close 65536", `{"conn_id":"c","close_code":65536}`, scanWant{err: ErrCloseCodeType}},
	{"close 99999", `{"conn_id":"c","close_code":99999}`, scanWant{err: ErrCloseCodeType}},
	{"close huge", `{"conn_id":"c","close_code":184467440737095516160000}`, scanWant{err: ErrCloseCodeType}},
	{"close -1", `{"conn_id":"c","close_code":-1}`, scanWant{err: ErrCloseCodeType}},
	{"close -0.0", `{"conn_id":"c","close_code":-0.0}`, scanWant{err: ErrCloseCodeType}},
	{"close fraction", `{"conn_id":"c","close_code":1000.0}`, scanWant{err: ErrCloseCodeType}},
	{"close fraction 2", `{"conn_id":"c","close_code":1000.5}`, scanWant{err: ErrCloseCodeType}},
	{"close exponent", `{"conn_id":"c","close_code":1e3}`, scanWant{err: ErrCloseCodeType}},
	{"close exponent 0", `{"conn_id":"c","close_code":0e0}`, scanWant{err: ErrCloseCodeType}},
	{"close string", `{"conn_id":"c","close_code":"1000"}`, scanWant{err: ErrCloseCodeType}},
	{"close bool", `{"conn_id":"c","close_code":true}`, scanWant{err: ErrCloseCodeType}},
	{"close object", `{"conn_id":"c","close_code":{}}`, scanWant{err: ErrCloseCodeType}},
	{"close array", `{"conn_id":"c","close_code":[1000]}`, scanWant{err: ErrCloseCodeType}},

	// conn_id types and decoding.
	{"conn_id number", `{"conn_id":1,"frame":1}`, scanWant{err: ErrConnIDType}},
	{"conn_id bool", `{"conn_id":false,"frame":1}`, scanWant{err: ErrConnIDType}},
	{"conn_id object", `{"conn_id":{},"frame":1}`, scanWant{err: ErrConnIDType}},
	{"conn_id array", `{"conn_id":["c"],"frame":1}`, scanWant{err: ErrConnIDType}},
	{"conn_id escaped", `{"conn_id":"client-\u0073rv-0123abcd","frame":1}`,
		scanWant{connID: "client-srv-0123abcd", frame: str(`1`)}},
	{"conn_id all escapes", `{"conn_id":"a\"b\\c\/d\b\f\n\r\te\u00e9\u0000","frame":1}`,
		scanWant{connID: "a\"b\\c/d\b\f\n\r\te\u00e9\x00", frame: str(`1`)}},
	{"conn_id lone surrogate", `{"conn_id":"\ud800","frame":1}`, scanWant{connID: "\ufffd", frame: str(`1`)}},
	{"conn_id raw utf8", "{\"conn_id\":\"\u00e9\",\"frame\":1}", scanWant{connID: "\u00e9", frame: str(`1`)}},

	// Duplicate keys: last wins, as in encoding/json.
	{"dup conn_id", `{"conn_id":"a","conn_id":"b","frame":1}`, scanWant{connID: "b", frame: str(`1`)}},
	{"dup conn_id to null", `{"conn_id":"a","conn_id":null,"push_wake":{}}`, scanWant{push: str(`{}`)}},
	{"dup frame", `{"conn_id":"c","frame":1,"frame":[2]}`, scanWant{connID: "c", frame: str(`[2]`)}},
	{"dup frame to null", `{"conn_id":"c","frame":1,"frame":null}`, scanWant{err: ErrNothingToDo}},
	{"dup close", `{"conn_id":"c","close_code":1000,"close_code":4000}`, scanWant{connID: "c", code: 4000}},
	{"dup close to null", `{"conn_id":"c","close_code":1000,"close_code":null}`, scanWant{err: ErrNothingToDo}},
	{"dup push", `{"push_wake":{"a":1},"push_wake":{"b":2}}`, scanWant{push: str(`{"b":2}`)}},
	{"dup push to null", `{"push_wake":{"a":1},"push_wake":null}`, scanWant{err: ErrNoTarget}},
	{"bad type before good", `{"conn_id":1,"conn_id":"c","frame":1}`, scanWant{err: ErrConnIDType}},

	// Escaped keys name the same field, as in encoding/json.
	{"escaped key", `{"conn\u005fid":"c","fr\u0061me":1}`, scanWant{connID: "c", frame: str(`1`)}},
	{"escaped key last wins", `{"conn_id":"a","conn\u005fid":"b","frame":1}`, scanWant{connID: "b", frame: str(`1`)}},
	{"escaped key type", `{"close\u005fcode":"x","conn_id":"c","frame":1}`, scanWant{err: ErrCloseCodeType}},
	{"escaped long key", `{"\u0063onn_id_but_much_longer":"x","conn_id":"c","frame":1}`,
		scanWant{connID: "c", frame: str(`1`)}},
	// Keys match exactly: other case is another (unknown) key.
	{"case differs", `{"Conn_ID":"c","FRAME":1}`, scanWant{err: ErrNoTarget}},

	// Unknown keys are ignored but must be valid JSON.
	{"unknown keys", `{"x":{"conn_id":"evil"},"conn_id":"c","y":[1,{"z":null}],"frame":1,"":0}`,
		scanWant{connID: "c", frame: str(`1`)}},
	{"unknown key bad value", `{"conn_id":"c","frame":1,"x":tru}`, scanWant{err: ErrInvalidJSON}},
	{"unknown key bad utf8", "{\"conn_id\":\"c\",\"frame\":1,\"x\":\"\xff\"}", scanWant{err: ErrInvalidJSON}},

	// push_wake types.
	{"push string", `{"push_wake":"fcm"}`, scanWant{err: ErrPushWakeType}},
	{"push array", `{"push_wake":[{}]}`, scanWant{err: ErrPushWakeType}},
	{"push number", `{"push_wake":1}`, scanWant{err: ErrPushWakeType}},
	{"push bool", `{"push_wake":true}`, scanWant{err: ErrPushWakeType}},

	// Target rules.
	{"empty object", `{}`, scanWant{err: ErrNoTarget}},
	{"empty object spaced", ` { } `, scanWant{err: ErrNoTarget}},
	{"frame without conn_id", `{"frame":1}`, scanWant{err: ErrNoTarget}},
	{"close without conn_id", `{"close_code":1000}`, scanWant{err: ErrNoTarget}},
	{"empty conn_id", `{"conn_id":"","frame":1}`, scanWant{err: ErrNoTarget}},
	{"null conn_id", `{"conn_id":null,"frame":1}`, scanWant{err: ErrNoTarget}},
	{"conn_id only", `{"conn_id":"c"}`, scanWant{err: ErrNothingToDo}},

	// Not objects.
	{"array", `[{"conn_id":"c","frame":1}]`, scanWant{err: ErrNotObject}},
	{"string", `"conn_id"`, scanWant{err: ErrNotObject}},
	{"number", `1`, scanWant{err: ErrNotObject}},
	{"null", `null`, scanWant{err: ErrNotObject}},
	{"spaced true", ` true `, scanWant{err: ErrNotObject}},

	// Not JSON.
	{"empty", ``, scanWant{err: ErrInvalidJSON}},
	{"spaces", "  \n", scanWant{err: ErrInvalidJSON}},
	{"garbage", `hello`, scanWant{err: ErrInvalidJSON}},
	{"open brace", `{`, scanWant{err: ErrInvalidJSON}},
	{"unclosed", `{"conn_id":"c","frame":1`, scanWant{err: ErrInvalidJSON}},
	{"trailing comma", `{"conn_id":"c","frame":1,}`, scanWant{err: ErrInvalidJSON}},
	{"trailing brace", `{"conn_id":"c","frame":1}}`, scanWant{err: ErrInvalidJSON}},
	{"trailing value", `{"conn_id":"c","frame":1} 1`, scanWant{err: ErrInvalidJSON}},
	{"two objects", `{"conn_id":"c","frame":1}{"conn_id":"d","frame":1}`, scanWant{err: ErrInvalidJSON}},
	{"missing colon", `{"conn_id" "c","frame":1}`, scanWant{err: ErrInvalidJSON}},
	{"missing comma", `{"conn_id":"c" "frame":1}`, scanWant{err: ErrInvalidJSON}},
	{"bare key", `{conn_id:"c","frame":1}`, scanWant{err: ErrInvalidJSON}},
	{"bad frame", `{"conn_id":"c","frame":01}`, scanWant{err: ErrInvalidJSON}},
	{"bad frame unclosed", `{"conn_id":"c","frame":[1}`, scanWant{err: ErrInvalidJSON}},
	{"bad conn_id escape", `{"conn_id":"\x41","frame":1}`, scanWant{err: ErrInvalidJSON}},
	{"conn_id control char", "{\"conn_id\":\"a\nb\",\"frame\":1}", scanWant{err: ErrInvalidJSON}},
	{"conn_id bad utf8", "{\"conn_id\":\"\xc3\",\"frame\":1}", scanWant{err: ErrInvalidJSON}},
	{"key bad utf8", "{\"\xff\":1,\"conn_id\":\"c\",\"frame\":1}", scanWant{err: ErrInvalidJSON}},
	// A type error in an otherwise broken message is reported as broken JSON.
	{"type error then garbage", `{"conn_id":1} x`, scanWant{err: ErrInvalidJSON}},
	{"type error then unclosed", `{"close_code":"x","a":[`, scanWant{err: ErrInvalidJSON}},
	{"push type then garbage", `{"push_wake":1,}`, scanWant{err: ErrInvalidJSON}},
	{"not object then garbage", `[1]]`, scanWant{err: ErrInvalidJSON}},
}

func TestScanTable(t *testing.T) {
	for _, c := range scanCases {
		t.Run(c.name, func(t *testing.T) {
			msg := []byte(c.in)
			var e FromBinary
			err := e.Scan(msg)
			if !errors.Is(err, c.want.err) || (err == nil) != (c.want.err == nil) {
				t.Fatalf("Scan(%q) = %v, want %v", c.in, err, c.want.err)
			}
			// The table itself must agree with encoding/json.
			checkScanAgainstRef(t, msg)
			if err != nil {
				return
			}
			if string(e.ConnID) != c.want.connID {
				t.Errorf("ConnID = %q, want %q", e.ConnID, c.want.connID)
			}
			if e.CloseCode != c.want.code {
				t.Errorf("CloseCode = %d, want %d", e.CloseCode, c.want.code)
			}
			checkRaw(t, "Frame", msg, e.Frame, c.want.frame)
			checkRaw(t, "PushWake", msg, e.PushWake, c.want.push)
		})
	}
}

func checkRaw(t *testing.T, field string, msg, got []byte, want *string) {
	t.Helper()
	switch {
	case want == nil && got != nil:
		t.Errorf("%s = %q, want nil", field, got)
	case want != nil && got == nil:
		t.Errorf("%s = nil, want %q", field, *want)
	case want != nil && string(got) != *want:
		t.Errorf("%s = %q, want %q (byte for byte)", field, got, *want)
	case got != nil && !within(msg, got):
		t.Errorf("%s is a copy, want a slice of the message", field)
	}
}

// A FromBinary is reused by the loop: nothing from one message may leak into
// the next.
func TestScanReuse(t *testing.T) {
	var e FromBinary
	if err := e.Scan([]byte(`{"conn_id":"a\u0062c","frame":[1],"close_code":4000,"push_wake":{}}`)); err != nil {
		t.Fatal(err)
	}
	if string(e.ConnID) != "abc" || e.CloseCode != 4000 || e.Frame == nil || e.PushWake == nil {
		t.Fatalf("first scan: %+v", e)
	}
	if err := e.Scan([]byte(`{"conn_id":"xy","frame":2}`)); err != nil {
		t.Fatal(err)
	}
	if string(e.ConnID) != "xy" || e.CloseCode != 0 || string(e.Frame) != "2" || e.PushWake != nil {
		t.Fatalf("second scan kept state: conn %q code %d frame %q push %q", e.ConnID, e.CloseCode, e.Frame, e.PushWake)
	}
	if err := e.Scan([]byte(`nope`)); err == nil {
		t.Fatal("garbage accepted")
	}
	if e.ConnID != nil || e.Frame != nil || e.CloseCode != 0 || e.PushWake != nil {
		t.Fatalf("failed scan left fields set: %+v", e)
	}
}

// An escaped conn_id far longer than any live one must decode to something
// that cannot name a phone, and never overrun the fixed buffer.
func TestScanLongEscapedConnID(t *testing.T) {
	for _, n := range []int{maxConnIDLen - 8, maxConnIDLen - 4, maxConnIDLen - 1, maxConnIDLen, maxConnIDLen + 1, 1000} {
		for _, esc := range []string{`\u0041`, `\n`, `\u00e9`, `\ud83d\ude00`} {
			id := strings.Repeat(esc, n)
			msg := []byte(`{"conn_id":"` + id + `","frame":1}`)
			var e FromBinary
			if err := e.Scan(msg); err != nil {
				t.Fatalf("n=%d %s: %v", n, esc, err)
			}
			checkScanAgainstRef(t, msg)
			if couldBeConnID(e.ConnID) {
				t.Fatalf("n=%d %s: decoded to a plausible conn_id %q", n, esc, e.ConnID)
			}
		}
	}
	// A live-length escaped conn_id decodes exactly.
	id := "client-" + strings.Repeat("s", 128) + "-0123abcd"
	msg := []byte(`{"conn_id":"` + strings.ReplaceAll(id, "s", `\u0073`) + `","frame":1}`)
	var e FromBinary
	if err := e.Scan(msg); err != nil || string(e.ConnID) != id {
		t.Fatalf("Scan = %v, conn_id %q", err, e.ConnID)
	}
}

// The object counts as a level: encoding/json refuses more than MaxDepth
// levels in all, so the frame may nest MaxDepth-1 deep.
func TestScanDepth(t *testing.T) {
	for _, c := range []struct {
		depth int
		want  error
	}{
		{MaxDepth - 1, nil},
		{MaxDepth, ErrInvalidJSON},
		{MaxDepth + 1, ErrInvalidJSON},
	} {
		for _, key := range []string{"frame", "unknown", "push_wake"} {
			var inner string
			if key == "push_wake" {
				inner = strings.Repeat(`{"a":`, c.depth-1) + "{}" + strings.Repeat("}", c.depth-1)
			} else {
				inner = nest("[", "]", c.depth)
			}
			msg := []byte(`{"conn_id":"c","close_code":1000,"` + key + `":` + inner + `}`)
			var e FromBinary
			if err := e.Scan(msg); !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
				t.Errorf("%s nested %d: Scan = %v, want %v", key, c.depth, err, c.want)
			}
			checkScanAgainstRef(t, msg)
		}
	}
}

func TestScanAllocs(t *testing.T) {
	msgs := [][]byte{
		[]byte(`{"conn_id":"client-srv-0123abcd","frame":{"type":"msg","body":"hello","n":[1,2,3]}}`),
		[]byte(`{"conn_id":"client-\u0073rv-0123abcd","close_code":4421,"x":{"y":null}}`),
		[]byte(`{"conn\u005fid":"c","fr\u0061me":1}`),
		[]byte(`{"push_wake":{"platform":"fcm","token":"abc"}}`),
		[]byte(`[1,2]`),
		[]byte(`{"conn_id":1}`),
		[]byte(`{"conn_id":"c","frame":` + nest("[", "]", MaxDepth) + `}`),
	}
	var e FromBinary
	for _, m := range msgs {
		if n := testing.AllocsPerRun(100, func() { _ = e.Scan(m) }); n != 0 {
			t.Errorf("Scan(%.30q...) allocates %v times", m, n)
		}
	}
}
