package loop_test

// WebSocket correctness (RFC 6455 as docs/protocol.md, "The WebSocket
// connection", applies it):
// reassembly, control frames between fragments, the close handshake,
// protocol violations and the message size limit. Phones are raw TCP
// clients with hand-built frames; binaries are gorilla clients.

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"switchboard/internal/wsclient"
	"switchboard/loop"
)

var envelopeRE = regexp.MustCompile(`^\{"conn_id":"(client-[!-~]+-[0-9a-f]{8})","frame":`)

// rawConnID sends one frame from a raw phone and returns the conn_id its
// binary sees.
func rawConnID(t *testing.T, ph *rawClient, b *peer) string {
	t.Helper()
	ph.write(wsclient.Masked(true, wsclient.OpText, []byte(`{"hello":"raw"}`)))
	env := b.next(t)
	m := envelopeRE.FindSubmatch(env)
	if m == nil || string(env) != splice(string(m[1]), []byte(`{"hello":"raw"}`)) {
		t.Fatalf("binary got %s", env)
	}
	return string(m[1])
}

func expectMsg(t *testing.T, p *peer, want string) {
	t.Helper()
	if got := string(p.next(t)); got != want {
		t.Fatalf("got  %.300s\nwant %.300s", got, want)
	}
}

func TestFragmentedPhoneMessages(t *testing.T) {
	r := startRelay(t, loop.Config{GracePeriod: shortGrace})
	b := r.binary(t, "srv-frag")
	ph := rawPhone(t, r.Addr, "srv-frag")
	id := rawConnID(t, ph, b)

	var doc bytes.Buffer
	doc.WriteString(`{"items":[`)
	for i := 0; i < 300; i++ {
		if i > 0 {
			doc.WriteString(", ")
		}
		doc.WriteString(`{"i":` + strconv.Itoa(i) + `,"s":"é\u00e9✓"}`)
	}
	doc.WriteString(`]}`)
	msg := doc.Bytes()

	for _, tc := range []struct {
		name string
		op   byte
		n    int
	}{
		{"text/2", wsclient.OpText, 2},
		{"text/many", wsclient.OpText, 257},
		{"binary/3", wsclient.OpBinary, 3},
		{"binary/many", wsclient.OpBinary, 500},
		{"text/one-byte-each", wsclient.OpText, len(msg)},
		{"text/with empty fragments", wsclient.OpText, len(msg) + 20}, // trailing fragments carry nothing
	} {
		t.Run(tc.name, func(t *testing.T) {
			ph.write(wsclient.Fragments(tc.op, msg, tc.n))
			expectMsg(t, b, splice(id, msg))
		})
	}
	// A message split across the UTF-8 bytes of one character is still
	// validated whole.
	t.Run("utf-8 split", func(t *testing.T) {
		m := []byte(`"✓✓"`)
		ph.write(append(wsclient.Masked(false, wsclient.OpText, m[:2]), wsclient.Masked(true, wsclient.OpCont, m[2:])...))
		expectMsg(t, b, splice(id, m))
	})
	// The fragments trickle in one write at a time, the frames themselves
	// split across writes.
	t.Run("split writes", func(t *testing.T) {
		wire := wsclient.Fragments(wsclient.OpText, msg, 7)
		for i := 0; i < len(wire); i += 333 {
			ph.write(wire[i:min(i+333, len(wire))])
		}
		expectMsg(t, b, splice(id, msg))
	})
}

func TestPingBetweenFragments(t *testing.T) {
	r := startRelay(t, loop.Config{GracePeriod: shortGrace})
	b := r.binary(t, "srv-ping")
	ph := rawPhone(t, r.Addr, "srv-ping")
	id := rawConnID(t, ph, b)

	msg := []byte(`["one","two","three"]`)
	ping125 := bytes.Repeat([]byte{0xA5}, 125)
	var wire []byte
	wire = append(wire, wsclient.Masked(false, wsclient.OpText, msg[:7])...)
	wire = append(wire, wsclient.Masked(true, wsclient.OpPing, []byte("p-1"))...)
	wire = append(wire, wsclient.Masked(false, wsclient.OpCont, msg[7:14])...)
	wire = append(wire, wsclient.Masked(true, wsclient.OpPing, nil)...)
	wire = append(wire, wsclient.Masked(true, wsclient.OpPong, []byte("unsolicited"))...) // allowed, ignored
	wire = append(wire, wsclient.Masked(true, wsclient.OpPing, ping125)...)
	wire = append(wire, wsclient.Masked(true, wsclient.OpCont, msg[14:])...)
	ph.write(wire)

	for _, want := range [][]byte{[]byte("p-1"), nil, ping125} {
		f := ph.mustFrame()
		if f.Op != wsclient.OpPong || !bytes.Equal(f.Payload, want) {
			t.Fatalf("got op %#x %q, want pong %q", f.Op, f.Payload, want)
		}
	}
	expectMsg(t, b, splice(id, msg))

	// A binary's pings are answered the same way (gorilla's ping handler
	// is replaced to see the pong).
	pongs := make(chan string, 1)
	b.conn.SetPongHandler(func(s string) error { pongs <- s; return nil })
	if err := b.conn.WriteControl(websocket.PingMessage, []byte("bin-ping"), time.Now().Add(testTimeout)); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-pongs:
		if s != "bin-ping" {
			t.Fatalf("binary's pong %q", s)
		}
	case <-time.After(testTimeout):
		t.Fatal("no pong for the binary")
	}
}

func TestCloseHandshake(t *testing.T) {
	r := startRelay(t, loop.Config{GracePeriod: shortGrace})
	b := r.binary(t, "srv-close")

	t.Run("raw phone, code and reason", func(t *testing.T) {
		ph := rawPhone(t, r.Addr, "srv-close")
		id := rawConnID(t, ph, b)
		ph.write(wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(4000, "bye now")))
		ph.expectClose(4000, "")
		expectMsg(t, b, notice(id, 4000))
	})
	t.Run("raw phone, 1000", func(t *testing.T) {
		ph := rawPhone(t, r.Addr, "srv-close")
		id := rawConnID(t, ph, b)
		ph.write(wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(1000, "")))
		ph.expectClose(1000, "")
		expectMsg(t, b, notice(id, 1000))
	})
	t.Run("raw phone, empty close", func(t *testing.T) {
		ph := rawPhone(t, r.Addr, "srv-close")
		id := rawConnID(t, ph, b)
		ph.write(wsclient.Masked(true, wsclient.OpClose, nil))
		ph.expectClose(1005, "") // echoed with no body
		expectMsg(t, b, notice(id, 1001))
	})
	t.Run("raw phone, data after close is ignored", func(t *testing.T) {
		ph := rawPhone(t, r.Addr, "srv-close")
		id := rawConnID(t, ph, b)
		ph.write(append(wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(4001, "")), wsclient.Masked(true, wsclient.OpText, []byte(`"late"`))...))
		ph.expectClose(4001, "")
		expectMsg(t, b, notice(id, 4001))
	})
	t.Run("gorilla phone", func(t *testing.T) {
		p := r.phone(t, "srv-close")
		id := connIDOf(t, p, b)
		msg := websocket.FormatCloseMessage(4321, "done")
		if err := p.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(testTimeout)); err != nil {
			t.Fatal(err)
		}
		p.expectClose(t, 4321, "")
		expectMsg(t, b, notice(id, 4321))
	})
	t.Run("raw binary", func(t *testing.T) {
		bin := rawUpgrade(t, r.Addr, "/v1/server", rawBinaryLines("srv-close-2"), nil)
		p := r.phone(t, "srv-close-2")
		bin.write(wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(1001, "restarting")))
		bin.expectClose(1001, "")
		p.expectClose(t, 1000, "") // its slot went with it
		waitFor(t, "the slot to go", func() bool { return r.Binaries() == 1 })
	})
	waitFor(t, "phones to detach", func() bool { return r.Phones() == 0 })
}

func TestProtocolViolations(t *testing.T) {
	r := startRelay(t, loop.Config{GracePeriod: shortGrace})
	b := r.binary(t, "srv-proto")

	text := func(s string) []byte { return wsclient.Masked(true, wsclient.OpText, []byte(s)) }
	long := bytes.Repeat([]byte("x"), 126)
	cases := []struct {
		name    string
		wire    []byte
		forward string // a good message in wire before the violation
	}{
		{name: "RSV1", wire: wsclient.Masked(true, 0x40|wsclient.OpText, []byte(`1`))},
		{name: "RSV2", wire: wsclient.Masked(true, 0x20|wsclient.OpText, []byte(`1`))},
		{name: "RSV3", wire: wsclient.Masked(true, 0x10|wsclient.OpText, []byte(`1`))},
		{name: "RSV1 on a ping", wire: wsclient.Masked(true, 0x40|wsclient.OpPing, nil)},
		{name: "RSV on a continuation", wire: append(wsclient.Masked(false, wsclient.OpText, []byte(`[`)), wsclient.Masked(true, 0x40|wsclient.OpCont, []byte(`]`))...)},
		{name: "opcode 3", wire: wsclient.Masked(true, 0x3, []byte(`1`))},
		{name: "opcode 7", wire: wsclient.Masked(true, 0x7, []byte(`1`))},
		{name: "opcode 0xB", wire: wsclient.Masked(true, 0xB, nil)},
		{name: "opcode 0xF", wire: wsclient.Masked(true, 0xF, nil)},
		{name: "unmasked text", wire: wsclient.Unmasked(true, wsclient.OpText, []byte(`1`))},
		{name: "unmasked empty text", wire: wsclient.Unmasked(true, wsclient.OpText, nil)},
		{name: "unmasked ping", wire: wsclient.Unmasked(true, wsclient.OpPing, []byte("p"))},
		{name: "unmasked close", wire: wsclient.Unmasked(true, wsclient.OpClose, wsclient.CloseBody(1000, ""))},
		{name: "unmasked continuation", wire: append(wsclient.Masked(false, wsclient.OpText, []byte(`[`)), wsclient.Unmasked(true, wsclient.OpCont, []byte(`]`))...)},
		{name: "continuation first", wire: wsclient.Masked(true, wsclient.OpCont, []byte(`1`))},
		{name: "non-final continuation first", wire: wsclient.Masked(false, wsclient.OpCont, []byte(`1`))},
		{name: "continuation after a whole message", wire: append(text(`1`), wsclient.Masked(true, wsclient.OpCont, []byte(`2`))...), forward: `1`},
		{name: "text inside a fragmented message", wire: append(wsclient.Masked(false, wsclient.OpText, []byte(`[1`)), text(`2`)...)},
		{name: "binary inside a fragmented message", wire: append(wsclient.Masked(false, wsclient.OpText, []byte(`[1`)), wsclient.Masked(false, wsclient.OpBinary, []byte(`2`))...)},
		{name: "ping 126 bytes", wire: wsclient.Masked(true, wsclient.OpPing, long)},
		{name: "pong 126 bytes", wire: wsclient.Masked(true, wsclient.OpPong, long)},
		{name: "close 126 bytes", wire: wsclient.Masked(true, wsclient.OpClose, append(wsclient.CloseBody(1000, ""), long[:124]...))},
		{name: "fragmented ping", wire: wsclient.Masked(false, wsclient.OpPing, []byte("p"))},
		{name: "fragmented close", wire: wsclient.Masked(false, wsclient.OpClose, wsclient.CloseBody(1000, ""))},
		{name: "fragmented pong", wire: wsclient.Masked(false, wsclient.OpPong, nil)},
		{name: "close with 1-byte body", wire: wsclient.Masked(true, wsclient.OpClose, []byte{0x03})},
		{name: "close code 999", wire: wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(999, ""))},
		{name: "close code 0", wire: wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(0, ""))},
		{name: "close code 1004", wire: wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(1004, ""))},
		{name: "close code 1005", wire: wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(1005, ""))},
		{name: "close code 1006", wire: wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(1006, ""))},
		{name: "close code 1015", wire: wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(1015, ""))},
		{name: "close code 1016", wire: wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(1016, ""))},
		{name: "close code 2999", wire: wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(2999, ""))},
		{name: "close code 5000", wire: wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(5000, ""))},
		{name: "close code 65535", wire: wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(65535, ""))},
		{name: "close reason not UTF-8", wire: wsclient.Masked(true, wsclient.OpClose, wsclient.CloseBody(1000, "\xff\xfe"))},
		{name: "16-bit length under 126", wire: []byte{wsclient.Fin | wsclient.OpText, 0x80 | 126, 0, 5, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e'}},
		{name: "64-bit length under 65536", wire: []byte{wsclient.Fin | wsclient.OpText, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e'}},
		{name: "64-bit length with the top bit set", wire: []byte{wsclient.Fin | wsclient.OpText, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4}},
	}
	before := r.Counters().Close(loop.CloseProtocol)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ph := rawPhone(t, r.Addr, "srv-proto")
			id := rawConnID(t, ph, b)
			ph.write(tc.wire)
			ph.expectClose(1002, "")
			if tc.forward != "" {
				expectMsg(t, b, splice(id, []byte(tc.forward)))
			}
			// Nothing the phone sent after its last good message reaches
			// the binary; the notice is 1001 (no close frame accepted).
			expectMsg(t, b, notice(id, 1001))
		})
	}
	if got := r.Counters().Close(loop.CloseProtocol) - before; got != uint64(len(cases)) {
		t.Fatalf("CloseProtocol counted %d, want %d", got, len(cases))
	}

	t.Run("binary", func(t *testing.T) {
		bin := rawUpgrade(t, r.Addr, "/v1/server", rawBinaryLines("srv-proto-2"), nil)
		p := r.phone(t, "srv-proto-2")
		bin.write(wsclient.Unmasked(true, wsclient.OpText, []byte(`{}`)))
		bin.expectClose(1002, "")
		p.expectClose(t, 1000, "")
		waitFor(t, "the slot to go", func() bool { return r.Binaries() == 1 })
	})
	waitFor(t, "phones to detach", func() bool { return r.Phones() == 0 })
}

func TestMessageSizeLimit(t *testing.T) {
	for _, max := range []int{0, 125, 200} { // 0: the default, 262144
		limit := max
		if limit == 0 {
			limit = loop.DefaultMaxMessageBytes
		}
		t.Run(strconv.Itoa(limit), func(t *testing.T) {
			r := startRelay(t, loop.Config{MaxMessageBytes: max, GracePeriod: shortGrace})
			reason := "read limited at " + strconv.Itoa(limit+1) + " bytes"
			b := r.binary(t, "srv-size")

			t.Run("phone exactly at the limit", func(t *testing.T) {
				ph := rawPhone(t, r.Addr, "srv-size")
				id := rawConnID(t, ph, b)
				ph.write(wsclient.Masked(true, wsclient.OpText, pad(limit)))
				expectMsg(t, b, splice(id, pad(limit)))
				ph.write(wsclient.Fragments(wsclient.OpBinary, pad(limit), 5))
				expectMsg(t, b, splice(id, pad(limit)))
				_ = ph.Conn.Close()
				expectMsg(t, b, notice(id, 1001))
			})
			t.Run("gorilla phone exactly at the limit", func(t *testing.T) {
				p := r.phone(t, "srv-size")
				id := connIDOf(t, p, b)
				p.send(t, string(pad(limit)))
				expectMsg(t, b, splice(id, pad(limit)))
				hangUp(t, p, b, id)
			})
			for _, over := range []struct {
				name string
				wire []byte
			}{
				{"one frame", wsclient.Masked(true, wsclient.OpText, pad(limit+1))},
				{"two fragments", wsclient.Fragments(wsclient.OpText, pad(limit+1), 2)},
				{"excess in a middle fragment", append(
					wsclient.Masked(false, wsclient.OpText, pad(limit + 1)[:limit-1]),
					append(wsclient.Masked(false, wsclient.OpCont, []byte("aa")), wsclient.Masked(true, wsclient.OpCont, []byte(`"`))...)...)},
				{"header alone", wsclient.Masked(true, wsclient.OpText, pad(limit+1))[:14]},
			} {
				t.Run("phone one byte over/"+over.name, func(t *testing.T) {
					ph := rawPhone(t, r.Addr, "srv-size")
					id := rawConnID(t, ph, b)
					ph.write(over.wire)
					ph.expectClose(1009, reason)
					expectMsg(t, b, notice(id, 1001))
				})
			}
			t.Run("gorilla phone one byte over", func(t *testing.T) {
				p := r.phone(t, "srv-size")
				id := connIDOf(t, p, b)
				_ = p.conn.WriteMessage(websocket.TextMessage, pad(limit+1))
				p.expectClose(t, 1009, reason)
				expectMsg(t, b, notice(id, 1001))
			})
			t.Run("binary", func(t *testing.T) {
				bin := r.binary(t, "srv-size-2")
				p := r.phone(t, "srv-size-2")
				id := connIDOf(t, p, bin)
				head := `{"conn_id":"` + id + `","frame":"`
				env := head + strings.Repeat("b", limit-len(head)-2) + `"}`
				if len(env) != limit {
					t.Fatalf("envelope is %d bytes", len(env))
				}
				bin.send(t, env)
				expectMsg(t, p, env[len(head)-1:len(env)-1])
				bin.send(t, env[:len(head)]+"b"+env[len(head):])
				bin.expectClose(t, 1009, reason)
				p.expectClose(t, 1000, "")
			})
		})
	}
}
