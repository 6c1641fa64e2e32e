package wsframe

import (
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

func TestSendableCloseCodeEvery(t *testing.T) {
	want := func(c int) bool {
		switch {
		case c >= 1000 && c <= 1003: // normal, going away, protocol error, unsupported data
			return true
		case c == 1004, c == 1005, c == 1006, c == 1015: // reserved / must not be sent
			return false
		case c >= 1007 && c <= 1014:
			return true
		case c >= 3000 && c <= 4999: // registered and private use
			return true
		}
		return false
	}
	for c := 0; c <= 0xffff; c++ {
		if got := SendableCloseCode(uint16(c)); got != want(c) {
			t.Errorf("SendableCloseCode(%d) = %v", c, got)
		}
	}
}

func TestParseCloseBody(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		code uint16
		ok   bool
	}{
		{"empty", nil, 0, true},
		{"empty non-nil", []byte{}, 0, true},
		{"one byte", []byte{0x03}, 0, false},
		{"1000", []byte{0x03, 0xe8}, 1000, true},
		{"1001 with reason", append([]byte{0x03, 0xe9}, "going away"...), 1001, true},
		{"4999 utf8 reason", append([]byte{0x13, 0x87}, "h\u00e9 \U0001F600"...), 4999, true},
		{"3000", []byte{0x0b, 0xb8}, 3000, true},
		{"4421", []byte{0x11, 0x45}, 4421, true},
		{"0", []byte{0, 0}, 0, false},
		{"999", []byte{0x03, 0xe7}, 0, false},
		{"1004", []byte{0x03, 0xec}, 0, false},
		{"1005", []byte{0x03, 0xed}, 0, false},
		{"1006", []byte{0x03, 0xee}, 0, false},
		{"1015", []byte{0x03, 0xf7}, 0, false},
		{"2999", []byte{0x0b, 0xb7}, 0, false},
		{"5000", []byte{0x13, 0x88}, 0, false},
		{"65535", []byte{0xff, 0xff}, 0, false},
		{"bad utf8 reason", []byte{0x03, 0xe8, 0xff}, 0, false},
		{"truncated utf8 reason", []byte{0x03, 0xe8, 0xc3}, 0, false},
		{"surrogate reason", []byte{0x03, 0xe8, 0xed, 0xa0, 0x80}, 0, false},
	}
	for _, c := range cases {
		code, err := ParseCloseBody(c.in)
		if (err == nil) != c.ok || (err != nil && err != ErrBadClose) {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
		}
		if code != c.code {
			t.Errorf("%s: code = %d, want %d", c.name, code, c.code)
		}
	}
}

func TestAppendClose(t *testing.T) {
	cases := []struct {
		code   uint16
		reason string
	}{
		{0, ""},
		{1000, ""},
		{1001, "shutting down"},
		{1011, "heartbeat timeout"},
		{4404, "no server with that id"},
		{4409, "server-id already claimed"},
		{4429, "too many phones for server-id"},
		{4404, "binary reclaimed server-id"},
		{1011, "phone backlog full"},
		{1002, strings.Repeat("r", 123)},
	}
	for _, c := range cases {
		b := AppendClose([]byte("x"), c.code, c.reason)
		if b[0] != 'x' {
			t.Fatalf("AppendClose clobbered dst")
		}
		b = b[1:]
		h, n, err := ParseHeader(b)
		if err != nil || n == 0 {
			t.Fatalf("AppendClose(%d, %q): header %v", c.code, c.reason, err)
		}
		if h.OpCode != ws.OpClose || !h.Fin || h.Masked || h.Rsv != 0 || int(h.Length) != len(b)-n {
			t.Fatalf("AppendClose(%d, %q): header %+v for %d payload bytes", c.code, c.reason, h, len(b)-n)
		}
		if h.Length > 125 {
			t.Fatalf("close payload %d bytes", h.Length)
		}
		payload := b[n:]
		if c.code == 0 {
			if len(payload) != 0 {
				t.Fatalf("code 0 wrote body % x", payload)
			}
			continue
		}
		code, err := ParseCloseBody(payload)
		if err != nil || code != c.code || string(payload[2:]) != c.reason {
			t.Fatalf("AppendClose(%d, %q) body reads back %d %q %v", c.code, c.reason, code, payload[2:], err)
		}
	}
}
