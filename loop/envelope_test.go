package loop_test

// Routing envelopes (docs/protocol.md, "Envelopes"): phone → binary wrapping and
// validation, binary → phone delivery and close directives, drops, and a
// many-phone exchange checked for loss, duplication and misrouting.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"switchboard/internal/wsclient"
	"switchboard/loop"
)

// strictEnvelope parses an envelope from the relay with a real JSON parser
// and returns its keys in order with their raw values; it fails on
// anything that is not exactly one JSON object.
func strictEnvelope(t *testing.T, env []byte) (keys []string, vals map[string]json.RawMessage) {
	t.Helper()
	if !json.Valid(env) {
		t.Fatalf("envelope is not JSON: %s", env)
	}
	d := json.NewDecoder(bytes.NewReader(env))
	d.UseNumber()
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("envelope is not an object: %s", env)
	}
	vals = map[string]json.RawMessage{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("envelope %s: %v", env, err)
		}
		k := tok.(string)
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			t.Fatalf("envelope %s: %v", env, err)
		}
		if _, dup := vals[k]; dup {
			t.Fatalf("envelope repeats key %q: %s", k, env)
		}
		keys = append(keys, k)
		vals[k] = v
	}
	if _, err := d.Token(); err != nil {
		t.Fatalf("envelope %s: %v", env, err)
	}
	if _, err := d.Token(); err != io.EOF {
		t.Fatalf("envelope has trailing data: %s", env)
	}
	return keys, vals
}

func compact(t *testing.T, b []byte) string {
	t.Helper()
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		t.Fatalf("compact %q: %v", b, err)
	}
	return out.String()
}

func TestEnvelopeShape(t *testing.T) {
	r := startRelay(t, loop.Config{})
	b := r.binary(t, "srv-env")
	p := r.phone(t, "srv-env")
	id := connIDOf(t, p, b)
	if !regexp.MustCompile(`^client-srv-env-[0-9a-f]{8}$`).MatchString(id) {
		t.Fatalf("conn_id %q", id)
	}
	frames := []string{
		`{"type":"hello","n":1}`,
		`{ "spaced" : [ 1 , 2 ] ,"nested":{"a":{"b":[[],{}]}} }`,
		"\t\r\n {\"surrounded\":\"by whitespace\"} \n",
		`"a string"`,
		`12345`, `-0.5e-10`, `true`, `false`, `null`, `[]`, `{}`,
		`{"esc":"\u00e9\ud83d\ude00\n\t\"\\\/<>&"}`,
		`{"raw":"é😀 ✓ 中文"}`,
		`{"html":"</script><b>&amp;"}`,
		`{"conn_id":"client-srv-env-00000000"}`, // inner keys are just data
		`[` + strings.Repeat(`[`, 500) + strings.Repeat(`]`, 500) + `]`,
	}
	for i, f := range frames {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			typ := websocket.TextMessage
			if i%2 == 1 {
				typ = websocket.BinaryMessage // opcode 2 is accepted too
			}
			if err := p.conn.WriteMessage(typ, []byte(f)); err != nil {
				t.Fatal(err)
			}
			env := b.next(t)
			// Switchboard splices the phone's bytes verbatim.
			if string(env) != splice(id, []byte(f)) {
				t.Fatalf("envelope %q\nwant     %q", env, splice(id, []byte(f)))
			}
			keys, vals := strictEnvelope(t, env)
			if len(keys) != 2 || keys[0] != "conn_id" || keys[1] != "frame" {
				t.Fatalf("keys %v", keys)
			}
			if string(vals["conn_id"]) != `"`+id+`"` {
				t.Fatalf("conn_id %s", vals["conn_id"])
			}
			if compact(t, vals["frame"]) != compact(t, []byte(f)) {
				t.Fatalf("frame %s, want %s", vals["frame"], f)
			}
		})
	}
	// The conn_id is stable for the connection's life.
	if again := connIDOf(t, p, b); again != id {
		t.Fatalf("conn_id changed from %s to %s", id, again)
	}
}

func TestPhoneNotJSON(t *testing.T) {
	r := startRelay(t, loop.Config{})
	b := r.binary(t, "srv-nj")
	cases := map[string]string{
		"word":                  `hello`,
		"empty":                 ``,
		"only whitespace":       " \n\t",
		"unterminated object":   `{"a":1`,
		"two values":            `{"a":1}{"b":2}`,
		"two numbers":           `1 2`,
		"trailing comma":        `[1,]`,
		"leading zero":          `{"a":01}`,
		"single quotes":         `{'a':1}`,
		"NaN":                   `NaN`,
		"bare key":              `{a:1}`,
		"invalid UTF-8":         "\"\xff\"",
		"truncated UTF-8":       "{\"a\":\"\xc3\"}",
		"overlong UTF-8":        "\"\xc0\xaf\"",
		"UTF-16 surrogate":      "\"\xed\xa0\x80\"",
		"control in string":     "\"a\x01b\"",
		"newline in string":     "\"a\nb\"",
		"bad escape":            `"\x41"`,
		"short unicode escape":  `"\u12"`,
		"BOM":                   "\xef\xbb\xbf{}",
		"NUL after value":       "{}\x00",
		"trailing garbage":      `{"a":1} x`,
		"unclosed string":       `"abc`,
		"unterminated array":    `[1,2`,
		"literal typo":          `tru`,
		"plus sign":             `+1`,
		"hex":                   `0x10`,
		"binary opcode garbage": "\x00\x01\x02",
	}
	for name, msg := range cases {
		t.Run(name, func(t *testing.T) {
			p := r.phone(t, "srv-nj")
			id := connIDOf(t, p, b)
			typ := websocket.TextMessage
			if strings.HasPrefix(name, "binary opcode") {
				typ = websocket.BinaryMessage
			}
			if err := p.conn.WriteMessage(typ, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			p.expectClose(t, 1000, "")
			expectMsg(t, b, notice(id, 1001))
		})
	}
	waitFor(t, "phones to detach", func() bool { return r.Phones() == 0 })
	if got := r.Counters().Close(loop.CloseNotJSON); got != uint64(len(cases)) {
		t.Fatalf("CloseNotJSON = %d, want %d", got, len(cases))
	}
}

func TestPhoneCloseNoticeAfterFrames(t *testing.T) {
	r := startRelay(t, loop.Config{})
	b := r.binary(t, "srv-order")
	p := r.phone(t, "srv-order")
	id := connIDOf(t, p, b)
	for i := 0; i < 50; i++ {
		p.send(t, `{"seq":`+strconv.Itoa(i)+`}`)
	}
	if err := p.conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		expectMsg(t, b, splice(id, []byte(`{"seq":`+strconv.Itoa(i)+`}`)))
	}
	expectMsg(t, b, notice(id, 4000))
	p.expectClose(t, 4000, "")

	// Same with the frames and the close frame in one TCP write.
	ph := rawPhone(t, r.Addr, "srv-order")
	id = rawConnID(t, ph, b)
	var wire []byte
	for i := 0; i < 50; i++ {
		wire = append(wire, wsclient.Masked(true, wsclient.OpText, []byte(strconv.Itoa(i)))...)
	}
	wire = append(wire, wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(4000, "x"))...)
	ph.write(wire)
	for i := 0; i < 50; i++ {
		expectMsg(t, b, splice(id, []byte(strconv.Itoa(i))))
	}
	expectMsg(t, b, notice(id, 4000))
	ph.expectClose(4000, "")
}

func TestPhoneTCPDropNotice(t *testing.T) {
	r := startRelay(t, loop.Config{})
	b := r.binary(t, "srv-drop")
	p := r.phone(t, "srv-drop")
	id := connIDOf(t, p, b)
	for i := 0; i < 10; i++ {
		p.send(t, strconv.Itoa(i))
	}
	_ = p.conn.NetConn().Close()
	for i := 0; i < 10; i++ {
		expectMsg(t, b, splice(id, []byte(strconv.Itoa(i))))
	}
	expectMsg(t, b, notice(id, 1001))
	waitFor(t, "phone detached", func() bool { return r.Phones() == 0 })

	// A drop in the middle of a fragmented message: the partial message is
	// never forwarded.
	ph := rawPhone(t, r.Addr, "srv-drop")
	id = rawConnID(t, ph, b)
	ph.write(wsclient.Masked(false, wsclient.OpText, []byte(`{"partial":`)))
	_ = ph.Conn.Close()
	expectMsg(t, b, notice(id, 1001))
}

func TestPhoneCannotForgeConnID(t *testing.T) {
	r := startRelay(t, loop.Config{})
	b := r.binary(t, "srv-x")
	other := r.phone(t, "srv-x")
	otherID := connIDOf(t, other, b)
	attempts := []string{
		`1,"conn_id":"client-x-00000000"`,
		`1,"conn_id":"` + otherID + `"`,
		`"a"} {"conn_id":"x"`,
		`"a"},{"conn_id":"x","frame":1`,
		`{"a":1},"conn_id":"` + otherID + `"`,
		`{"a":1}}` + "\n" + `{"conn_id":"` + otherID + `","frame":{"a":1}`,
		`"\",\"conn_id\":\"` + otherID + `"`,
		`"\\",\"conn_id\":\"` + otherID + `\""`,
		`"\\\",\"conn_id\":\"x"`,
		`"x\\"` + `,"conn_id":"` + otherID + `"`,
		`{"conn_id":"` + otherID + `"}`,
		`{"frame":1,"conn_id":"` + otherID + `"}`,
		`"` + "\\u0022,\\u0022conn_id\\u0022:\\u0022" + otherID + `"`,
		`null,"conn_id":"` + otherID + `"`,
		`[1],"conn_id":"` + otherID + `"`,
		`"a` + "\x00" + `","conn_id":"x"`,
		"\"a\xff\",\"conn_id\":\"x\"",
		`}`,
		`{`,
		`"`,
		`,"conn_id":"x"`,
		`{"a":"b"` + strings.Repeat(" ", 1000) + `,"conn_id":"x"`,
		strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10001), // deeper than encoding/json accepts
	}
	for i, a := range attempts {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			p := r.phone(t, "srv-x")
			id := connIDOf(t, p, b)
			p.send(t, a)
			env := b.next(t)
			keys, vals := strictEnvelope(t, env)
			if string(vals["conn_id"]) != `"`+id+`"` {
				t.Fatalf("attempt %.200q: binary saw conn_id %s, the phone's is %s", a, vals["conn_id"], id)
			}
			switch {
			case len(keys) == 2 && keys[1] == "frame":
				// Forwarded under its own conn_id: must be one valid JSON value.
				if !json.Valid([]byte(a)) || string(env) != splice(id, []byte(a)) {
					t.Fatalf("attempt %.200q forwarded as %.300s", a, env)
				}
				p.send(t, `"still open"`)
				expectMsg(t, b, splice(id, []byte(`"still open"`)))
				hangUp(t, p, b, id)
			case len(keys) == 2 && keys[1] == "close_code":
				if string(env) != notice(id, 1001) {
					t.Fatalf("notice %s", env)
				}
				p.expectClose(t, 1000, "")
			default:
				t.Fatalf("envelope %s", env)
			}
		})
	}
	// The other phone saw none of it and still works.
	b.send(t, `{"conn_id":"`+otherID+`","frame":"ok"}`)
	expectMsg(t, other, `"ok"`)
}

// hangUp drops the phone's TCP connection and consumes the close notice its
// binary gets, so a later read on the binary starts clean.
func hangUp(t *testing.T, p *peer, b *peer, id string) {
	t.Helper()
	_ = p.conn.NetConn().Close()
	expectMsg(t, b, notice(id, 1001))
}

// Binary → phone.

func TestBinaryFrameVerbatim(t *testing.T) {
	r := startRelay(t, loop.Config{})
	b := r.binary(t, "srv-vb")
	p := r.phone(t, "srv-vb")
	id := connIDOf(t, p, b)
	frames := []string{
		`{"a":1}`,
		`{ "spaced" :  [ 1 ,2 ] , "t" : true }`,
		"{\n\t\"multi\":\r\n\"line\"\n}",
		`"\u00e9\u0000\ud83d\ude00\"\\\/\b\f\n\r\t"`,
		`{"raw":"é😀 中文 ✓"}`,
		`{"html":"\u003c/script\u003e <>&"}`,
		`1.50e+10`, `-0`, `0.0`, `true`, `false`, `[]`, `{}`, `""`,
		`{"dup":1,"dup":2}`,
		`{"conn_id":"client-other-00000000","close_code":4000}`,
		`[` + strings.Repeat(`{"k":[`, 200) + strings.Repeat(`]}`, 200) + `]`,
		string(pad(100000)),
	}
	layouts := []func(f string) string{
		func(f string) string { return `{"conn_id":"` + id + `","frame":` + f + `}` },
		func(f string) string { return " {\n \"frame\" :\t" + f + " ,\r\n\"conn_id\" : \"" + id + "\" } \n" },
		func(f string) string {
			return `{"x":[1,{"conn_id":"nope"}],"conn_id":"` + id + `","close_code":0,"frame":` + f + `,"push_wake":null,"y":"z"}`
		},
		func(f string) string { return `{"conn_id":"nope","conn_id":"` + id + `","frame":` + f + `}` }, // last key wins
		func(f string) string {
			// An escaped conn_id names the same phone.
			return `{"conn_id":"` + strings.Replace(id, "-", `\u002d`, 1) + `","frame":` + f + `}`
		},
	}
	for li, layout := range layouts {
		for fi, f := range frames {
			t.Run(fmt.Sprintf("layout%d/frame%d", li, fi), func(t *testing.T) {
				b.send(t, layout(f))
				expectMsg(t, p, f)
			})
		}
	}
	// Binary (opcode 2) envelopes are routed too; the phone gets text.
	if err := b.conn.WriteMessage(websocket.BinaryMessage, []byte(`{"conn_id":"`+id+`","frame":[2]}`)); err != nil {
		t.Fatal(err)
	}
	expectMsg(t, p, `[2]`)
	if got := r.Counters().Drop(loop.DropBadEnvelope); got != 0 {
		t.Fatalf("DropBadEnvelope = %d", got)
	}
}

func TestBinaryCloseDirective(t *testing.T) {
	r := startRelay(t, loop.Config{})
	b := r.binary(t, "srv-cd")

	firstEventIsClose := func(t *testing.T, p *peer, code int) {
		t.Helper()
		select {
		case ev := <-p.events:
			var ce *websocket.CloseError
			if ev.err == nil || !asCloseError(ev.err, &ce) || ce.Code != code || ce.Text != "" {
				t.Fatalf("first event %q %v, want close %d with no frame before it", ev.data, ev.err, code)
			}
		case <-time.After(testTimeout):
			t.Fatal("no close")
		}
	}
	for _, tc := range []struct {
		name, env string
		code      int
	}{
		{"frame absent", `{"conn_id":"%s","close_code":4001}`, 4001},
		{"frame null", `{"conn_id":"%s","frame":null,"close_code":4002}`, 4002},
		{"close_code 1000", `{"close_code":1000,"conn_id":"%s"}`, 1000},
		{"close_code 3000", `{"conn_id":"%s","close_code":3000}`, 3000},
		{"close_code 4999", `{"conn_id":"%s","close_code":4999}`, 4999},
		// A code no endpoint may send: the phone is closed with no code.
		{"close_code 1005", `{"conn_id":"%s","close_code":1005}`, websocket.CloseNoStatusReceived},
		{"close_code 65535", `{"conn_id":"%s","close_code":65535}`, websocket.CloseNoStatusReceived},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := r.phone(t, "srv-cd")
			id := connIDOf(t, p, b)
			b.send(t, fmt.Sprintf(tc.env, id))
			firstEventIsClose(t, p, tc.code)
		})
	}
	t.Run("frame then close", func(t *testing.T) {
		p := r.phone(t, "srv-cd")
		id := connIDOf(t, p, b)
		b.send(t, `{"close_code":4003,"frame":{"last":true},"conn_id":"`+id+`"}`)
		expectMsg(t, p, `{"last":true}`)
		p.expectClose(t, 4003, "")
	})
	t.Run("close_code 0 is no close", func(t *testing.T) {
		p := r.phone(t, "srv-cd")
		id := connIDOf(t, p, b)
		b.send(t, `{"conn_id":"`+id+`","frame":1,"close_code":0}`)
		b.send(t, `{"conn_id":"`+id+`","frame":2,"close_code":null}`)
		expectMsg(t, p, `1`)
		expectMsg(t, p, `2`)
		hangUp(t, p, b, id)
	})
	t.Run("after queued frames", func(t *testing.T) {
		p := r.phone(t, "srv-cd")
		id := connIDOf(t, p, b)
		for i := 0; i < 20; i++ {
			b.send(t, `{"conn_id":"`+id+`","frame":{"n":`+strconv.Itoa(i)+`}}`)
		}
		b.send(t, `{"conn_id":"`+id+`","close_code":4004}`)
		b.send(t, `{"conn_id":"`+id+`","frame":"after the close"}`) // dropped
		for i := 0; i < 20; i++ {
			expectMsg(t, p, `{"n":`+strconv.Itoa(i)+`}`)
		}
		p.expectClose(t, 4004, "")
	})
	// The phones' closes were all asked for by the binary: no notices. A
	// later phone's frame proves the relay processed everything before it.
	waitFor(t, "phones to detach", func() bool { return r.Phones() == 0 })
	p := r.phone(t, "srv-cd")
	p.send(t, `"proof"`)
	if got := b.next(t); !regexp.MustCompile(`^\{"conn_id":"client-srv-cd-[0-9a-f]{8}","frame":"proof"\}$`).Match(got) {
		t.Fatalf("binary got %s, want only the new phone's frame", got)
	}
}

func asCloseError(err error, ce **websocket.CloseError) bool {
	c, ok := err.(*websocket.CloseError)
	if ok {
		*ce = c
	}
	return ok
}

func TestBinaryBadEnvelopes(t *testing.T) {
	r := startRelay(t, loop.Config{})
	b := r.binary(t, "srv-bad")
	p := r.phone(t, "srv-bad")
	id := connIDOf(t, p, b)
	bad := []string{
		`not json`,
		``,
		`{"conn_id":"` + id + `","frame":1`,
		`{"conn_id":"` + id + `","frame":1} trailing`,
		`{"conn_id":"` + id + `","frame":1}{}`,
		"{\"conn_id\":\"" + id + "\",\"frame\":\"\xff\"}",
		`{"conn_id":"` + id + `","frame":01}`,
		`{"conn_id":"` + id + `",}`,
		`[{"conn_id":"` + id + `","frame":1}]`,
		`"` + id + `"`,
		`42`, `null`, `true`,
		`{}`,
		`{"frame":1}`,
		`{"frame":1,"close_code":4000}`,
		`{"conn_id":null,"frame":1}`,
		`{"conn_id":"","frame":1}`,
		`{"conn_id":5,"frame":1}`,
		`{"conn_id":["` + id + `"],"frame":1}`,
		`{"conn_id":{"id":"` + id + `"},"frame":1}`,
		`{"conn_id":true,"frame":1}`,
		`{"conn_id":"` + id + `","close_code":"4000"}`,
		`{"conn_id":"` + id + `","close_code":70000}`,
		`{"conn_id":"` + id + `","close_code":65536}`,
		`{"conn_id":"` + id + `","close_code":-1}`,
		`{"conn_id":"` + id + `","close_code":4000.5}`,
		`{"conn_id":"` + id + `","close_code":4e3}`,
		`{"conn_id":"` + id + `","close_code":true}`,
		`{"conn_id":"` + id + `","frame":"x","close_code":[4000]}`,
		`{"conn_id":"` + id + `"}`,
		`{"conn_id":"` + id + `","frame":null}`,
		`{"conn_id":"` + id + `","frame":null,"close_code":0}`,
		`{"conn_id":"` + id + `","close_code":null}`,
		`{"conn_id":"` + id + `","push_wake":"fcm"}`,
		`{"push_wake":[1]}`,
		`{"push_wake":null}`,
	}
	for _, env := range bad {
		b.send(t, env)
	}
	// The binary is still up and its envelopes are processed in order: once
	// this one arrives every bad one before it has been counted.
	b.send(t, `{"conn_id":"`+id+`","frame":"after"}`)
	expectMsg(t, p, `"after"`)
	if got := r.Counters().Drop(loop.DropBadEnvelope); got != uint64(len(bad)) {
		t.Fatalf("DropBadEnvelope = %d, want %d", got, len(bad))
	}
	for _, reason := range []loop.DropReason{loop.DropUnknownConnID, loop.DropPushWakeOff, loop.DropPhoneClosing} {
		if got := r.Counters().Drop(reason); got != 0 {
			t.Fatalf("%s = %d", reason, got)
		}
	}
	// Neither side was closed.
	p.send(t, `"phone still up"`)
	expectMsg(t, b, splice(id, []byte(`"phone still up"`)))
	expectRegistered(t, r, 1, 1, 2)
}

func TestBinaryUnknownConnID(t *testing.T) {
	r := startRelay(t, loop.Config{})
	b := r.binary(t, "srv-unk")
	p := r.phone(t, "srv-unk")
	id := connIDOf(t, p, b)
	unknown := []string{
		`client-srv-unk-00000000`,
		strings.ToUpper(id[len(id)-8:]),
		id + " ",
		" " + id,
		id[:len(id)-1],
		id + "0",
		strings.ToUpper(id),
		strings.Repeat("x", 500),
	}
	if upper := "client-srv-unk-" + strings.ToUpper(id[len(id)-8:]); upper != id {
		unknown = append(unknown, upper) // hex digits are lowercase only
	}
	for _, u := range unknown {
		b.send(t, `{"conn_id":`+jsonString(u)+`,"frame":"wrong"}`)
		b.send(t, `{"conn_id":`+jsonString(u)+`,"close_code":4000}`)
	}
	b.send(t, `{"conn_id":"`+id+`","frame":"right"}`)
	expectMsg(t, p, `"right"`)
	if got := r.Counters().Drop(loop.DropUnknownConnID); got != uint64(2*len(unknown)) {
		t.Fatalf("DropUnknownConnID = %d, want %d", got, 2*len(unknown))
	}

	// A phone that has gone is unknown too, and so is the daemon's 4421
	// answer to its close notice.
	_ = p.conn.Close()
	expectMsg(t, b, notice(id, 1001))
	before := r.Counters().Drop(loop.DropUnknownConnID)
	b.send(t, `{"conn_id":"`+id+`","close_code":4421}`)
	b.send(t, `{"conn_id":"`+id+`","frame":"late"}`)
	waitFor(t, "both counted", func() bool { return r.Counters().Drop(loop.DropUnknownConnID) == before+2 })
	expectRegistered(t, r, 1, 0, 1)
}

func TestBinaryCannotReachOtherServersPhones(t *testing.T) {
	r := startRelay(t, loop.Config{})
	ba := r.binary(t, "srv-a")
	bb := r.binary(t, "srv-b")
	pa := r.phone(t, "srv-a")
	pb := r.phone(t, "srv-b")
	ida := connIDOf(t, pa, ba)
	idb := connIDOf(t, pb, bb)

	// Each binary addresses the other's phone: frames, closes and both.
	bb.send(t, `{"conn_id":"`+ida+`","frame":"from b"}`)
	bb.send(t, `{"conn_id":"`+ida+`","close_code":4000}`)
	bb.send(t, `{"conn_id":"`+ida+`","frame":"from b","close_code":4000}`)
	ba.send(t, `{"conn_id":"`+idb+`","frame":"from a"}`)
	ba.send(t, `{"conn_id":"`+idb+`","close_code":4000}`)
	// Then their own: these arrive first and intact, so nothing crossed.
	ba.send(t, `{"conn_id":"`+ida+`","frame":"own a"}`)
	bb.send(t, `{"conn_id":"`+idb+`","frame":"own b"}`)
	expectMsg(t, pa, `"own a"`)
	expectMsg(t, pb, `"own b"`)
	waitFor(t, "drops counted", func() bool { return r.Counters().Drop(loop.DropUnknownConnID) == 5 })
	if got := r.Counters().BinaryToPhone.Load(); got != 2 {
		t.Fatalf("BinaryToPhone = %d, want 2", got)
	}
	expectRegistered(t, r, 2, 2, 4)
	// And the phones' own frames go to their own binaries only.
	pa.send(t, `"to a"`)
	pb.send(t, `"to b"`)
	expectMsg(t, ba, splice(ida, []byte(`"to a"`)))
	expectMsg(t, bb, splice(idb, []byte(`"to b"`)))
}

func TestBinaryPushWakeOff(t *testing.T) {
	r := startRelay(t, loop.Config{})
	b := r.binary(t, "srv-pw")
	p := r.phone(t, "srv-pw")
	id := connIDOf(t, p, b)
	wakes := []string{
		`{"push_wake":{"platform":"fcm","token":"device-token"}}`,
		`{"conn_id":null,"push_wake":{"platform":"fcm","token":"device-token"}}`,
		`{"conn_id":"","push_wake":{"platform":"fcm","token":"device-token"}}`,
		`{"push_wake":{"platform":"apns","token":"t"}}`,
		`{"push_wake":{}}`,
	}
	for _, w := range wakes {
		b.send(t, w)
	}
	b.send(t, `{"conn_id":"`+id+`","frame":"after"}`)
	expectMsg(t, p, `"after"`)
	if got := r.Counters().Drop(loop.DropPushWakeOff); got != uint64(len(wakes)) {
		t.Fatalf("DropPushWakeOff = %d, want %d", got, len(wakes))
	}
	if got := r.Counters().Drop(loop.DropBadEnvelope); got != 0 {
		t.Fatalf("DropBadEnvelope = %d", got)
	}
}

func TestBinaryDisconnectClosesPhones(t *testing.T) {
	for _, how := range []string{"tcp drop", "close frame"} {
		t.Run(how, func(t *testing.T) {
			r := startRelay(t, loop.Config{GracePeriod: shortGrace})
			b := r.binary(t, "srv-bye")
			other := r.binary(t, "srv-stay")
			po := r.phone(t, "srv-stay")
			ido := connIDOf(t, po, other)
			var phones []*peer
			for i := 0; i < 5; i++ {
				p := r.phone(t, "srv-bye")
				connIDOf(t, p, b)
				phones = append(phones, p)
			}
			if how == "tcp drop" {
				_ = b.conn.NetConn().Close()
			} else {
				_ = b.conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
				b.expectClose(t, 1000, "")
			}
			for _, p := range phones {
				p.expectClose(t, 1000, "")
			}
			waitFor(t, "the slot to go", func() bool { return r.Binaries() == 1 && r.Phones() == 1 })
			late, _, err := dial(t, r.Addr, "/v1/client", phoneHeaders("srv-bye"))
			if err != nil {
				t.Fatal(err)
			}
			late.expectClose(t, 4404, "no server with that id")
			// The other server-id is untouched.
			other.send(t, `{"conn_id":"`+ido+`","frame":"fine"}`)
			expectMsg(t, po, `"fine"`)
			// The id is free again.
			b2 := r.binary(t, "srv-bye")
			p2 := r.phone(t, "srv-bye")
			connIDOf(t, p2, b2)
		})
	}
}

// TestManyPhonesBothWays: 2,000 phones over 125 server-ids (16 each) send
// numbered frames while every binary echoes each one back to the conn_id it
// came from. Every phone must receive exactly its own frames, in order.
func TestManyPhonesBothWays(t *testing.T) {
	const (
		servers   = 125
		perServer = 16
		perPhone  = 20
		phones    = servers * perServer
	)
	if testing.Short() {
		t.Skip("2,000 connections")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := startRelay(t, loop.Config{})
	d := websocket.Dialer{HandshakeTimeout: testTimeout, ReadBufferSize: 512, WriteBufferSize: 512}
	dialWS := func(path string, h http.Header) (*websocket.Conn, error) {
		c, _, err := d.DialContext(ctx, "ws://"+r.Addr+path, h)
		if err == nil {
			t.Cleanup(func() { _ = c.Close() })
		}
		return c, err
	}

	// Binaries: each echoes every envelope's frame back to its conn_id and
	// records the conn_ids it saw.
	var echoed atomic.Int64
	seen := make([]map[string]bool, servers)
	binConns := make([]*websocket.Conn, servers)
	var binWG sync.WaitGroup
	// The first failure is the cause; the rest follow from the cancel.
	var firstFailure atomic.Pointer[string]
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		firstFailure.CompareAndSwap(nil, &msg)
		cancel()
	}
	for s := 0; s < servers; s++ {
		c, err := dialWS("/v1/server", binaryHeaders("load-"+strconv.Itoa(s)))
		if err != nil {
			t.Fatalf("binary %d: %v", s, err)
		}
		seen[s] = map[string]bool{}
		binConns[s] = c
		binWG.Add(1)
		go func(s int, c *websocket.Conn) {
			defer binWG.Done()
			var env struct {
				ConnID string          `json:"conn_id"`
				Frame  json.RawMessage `json:"frame"`
			}
			for n := 0; n < perServer*perPhone; n++ {
				_, msg, err := c.ReadMessage()
				if err != nil {
					fail("binary %d after %d messages: %v", s, n, err)
					return
				}
				env.ConnID, env.Frame = "", nil
				if err := json.Unmarshal(msg, &env); err != nil || env.Frame == nil {
					fail("binary %d got %s", s, msg)
					return
				}
				if !strings.HasPrefix(env.ConnID, "client-load-"+strconv.Itoa(s)+"-") {
					fail("binary %d got a frame from %s", s, env.ConnID)
					return
				}
				seen[s][env.ConnID] = true
				out := append(append(append([]byte(`{"conn_id":"`), env.ConnID...), `","frame":`...), env.Frame...)
				if err := c.WriteMessage(websocket.TextMessage, append(out, '}')); err != nil {
					fail("binary %d write: %v", s, err)
					return
				}
				echoed.Add(1)
			}
		}(s, c)
	}

	// Phones, dialled with bounded concurrency.
	conns := make([]*websocket.Conn, phones)
	var dialWG sync.WaitGroup
	sem := make(chan struct{}, 32)
	var dialErr atomic.Value
	for i := 0; i < phones; i++ {
		dialWG.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem; dialWG.Done() }()
			c, err := dialWS("/v1/client", phoneHeaders("load-"+strconv.Itoa(i%servers)))
			if err != nil {
				dialErr.Store(fmt.Sprintf("phone %d: %v", i, err))
				return
			}
			conns[i] = c
		}(i)
	}
	dialWG.Wait()
	if e := dialErr.Load(); e != nil {
		t.Fatal(e)
	}
	if got := r.Phones(); got != phones {
		t.Fatalf("registered %d phones, want %d", got, phones)
	}

	// Every phone sends and receives at once.
	var phoneWG sync.WaitGroup
	for i, c := range conns {
		phoneWG.Add(2)
		go func() {
			defer phoneWG.Done()
			for n := 0; n < perPhone; n++ {
				if err := c.WriteMessage(websocket.TextMessage, []byte(`{"p":`+strconv.Itoa(i)+`,"n":`+strconv.Itoa(n)+`}`)); err != nil {
					fail("phone %d write: %v", i, err)
					return
				}
			}
		}()
		go func() {
			defer phoneWG.Done()
			for n := 0; n < perPhone; n++ {
				typ, msg, err := c.ReadMessage()
				if err != nil {
					fail("phone %d after %d frames: %v", i, n, err)
					return
				}
				if want := `{"p":` + strconv.Itoa(i) + `,"n":` + strconv.Itoa(n) + `}`; typ != websocket.TextMessage || string(msg) != want {
					fail("phone %d frame %d: got %s, want %s", i, n, msg, want)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { phoneWG.Wait(); binWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		fail("not done in %s", time.Since(start)) // unless something failed first
		// Unblock readers stuck on a lost frame so their goroutines end.
		for _, c := range append(conns, binConns...) {
			if c != nil {
				_ = c.NetConn().Close()
			}
		}
		<-done
	}
	if f := firstFailure.Load(); f != nil {
		t.Fatalf("%s (%d of %d frames echoed)", *f, echoed.Load(), phones*perPhone)
	}
	// Exactly once each way: no duplicate was queued anywhere.
	c := r.Counters()
	if p2b, b2p := c.PhoneToBinary.Load(), c.BinaryToPhone.Load(); p2b != phones*perPhone || b2p != phones*perPhone {
		t.Fatalf("PhoneToBinary=%d BinaryToPhone=%d, want %d each", p2b, b2p, phones*perPhone)
	}
	for s := range seen {
		if len(seen[s]) != perServer {
			t.Fatalf("binary %d saw %d distinct conn_ids, want %d", s, len(seen[s]), perServer)
		}
	}
	for reason := loop.DropReason(0); reason < loop.DropPhoneBacklog+1; reason++ {
		if got := c.Drop(reason); got != 0 {
			t.Fatalf("%s = %d", reason, got)
		}
	}
}

// frameFrom requires the binary's next message to be an envelope carrying
// frame and returns its conn_id.
func frameFrom(t *testing.T, b *peer, frame string) string {
	t.Helper()
	env := b.next(t)
	m := envelopeRE.FindSubmatch(env)
	if m == nil || string(env) != splice(string(m[1]), []byte(frame)) {
		t.Fatalf("binary got %.300s, want an envelope with %s", env, frame)
	}
	return string(m[1])
}

// A phone of a binary that has gone never sends its close notice to the
// binary that holds the server-id now.
func TestNoNoticeToNewBinary(t *testing.T) {
	r := startRelay(t, loop.Config{CloseLinger: time.Hour, GracePeriod: shortGrace})
	b1 := r.binary(t, "srv-new")
	// Raw phones neither answer the relay's close frame nor hang up, so
	// they are still connected when the next binary claims the id.
	var phones []*rawClient
	for i := 0; i < 4; i++ {
		ph := rawPhone(t, r.Addr, "srv-new")
		rawConnID(t, ph, b1)
		phones = append(phones, ph)
	}
	_ = b1.conn.NetConn().Close()
	for _, ph := range phones {
		f := ph.mustFrame()
		if f.Op != wsclient.OpClose || string(f.Payload) != string(wsclient.CloseBody(1000, "")) {
			t.Fatalf("phone got op %#x %q, want close 1000", f.Op, f.Payload)
		}
	}
	waitFor(t, "the slot to go", func() bool { return r.Binaries() == 0 && r.Phones() == 0 })
	b2 := r.binary(t, "srv-new")
	for i, ph := range phones {
		if i%2 == 0 {
			ph.write(wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(4000, ""))) // answers late
		} else {
			_ = ph.Conn.Close() // hangs up
		}
	}
	waitFor(t, "the old phones to end", func() bool { return r.Live() == 1 })
	p := r.phone(t, "srv-new")
	p.send(t, `"first"`)
	frameFrom(t, b2, `"first"`)
}
