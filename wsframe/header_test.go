package wsframe

import (
	"bytes"
	"errors"
	"math"
	"math/rand"
	"testing"

	"github.com/gobwas/ws"
)

func TestParseHeaderTable(t *testing.T) {
	mask := [4]byte{0xa1, 0xb2, 0xc3, 0xd4}
	cases := []struct {
		name string
		in   []byte
		want ws.Header
		n    int
		err  error
	}{
		{"empty", nil, ws.Header{}, 0, nil},
		{"one byte", []byte{0x81}, ws.Header{}, 0, nil},
		{"text 0 unmasked", []byte{0x81, 0x00}, ws.Header{Fin: true, OpCode: ws.OpText}, 2, nil},
		{"text 5 masked", []byte{0x81, 0x85, 0xa1, 0xb2, 0xc3, 0xd4, 'h', 'e'},
			ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: mask, Length: 5}, 6, nil},
		{"binary 125", []byte{0x82, 0x7d}, ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 125}, 2, nil},
		{"continuation not fin", []byte{0x00, 0x01}, ws.Header{OpCode: ws.OpContinuation, Length: 1}, 2, nil},
		{"rsv bits", []byte{0xf1, 0x00}, ws.Header{Fin: true, Rsv: 7, OpCode: ws.OpText}, 2, nil},
		{"rsv1 only", []byte{0x41, 0x00}, ws.Header{Rsv: 4, OpCode: ws.OpText}, 2, nil},
		{"reserved opcode decodes", []byte{0x8f, 0x00}, ws.Header{Fin: true, OpCode: 0xf}, 2, nil},
		{"ping masked", []byte{0x89, 0x80, 1, 2, 3, 4},
			ws.Header{Fin: true, OpCode: ws.OpPing, Masked: true, Mask: [4]byte{1, 2, 3, 4}}, 6, nil},

		// 16-bit lengths.
		{"126 needs 4", []byte{0x82, 0x7e, 0x00}, ws.Header{}, 0, nil},
		{"126 min", []byte{0x82, 0x7e, 0x00, 0x7e}, ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 126}, 4, nil},
		{"126 max", []byte{0x82, 0x7e, 0xff, 0xff}, ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 65535}, 4, nil},
		{"126 encoding 125", []byte{0x82, 0x7e, 0x00, 0x7d}, ws.Header{}, 0, ErrLengthEncoding},
		{"126 encoding 0", []byte{0x82, 0x7e, 0x00, 0x00}, ws.Header{}, 0, ErrLengthEncoding},
		{"126 masked", []byte{0x82, 0xfe, 0x01, 0x00, 0xa1, 0xb2, 0xc3, 0xd4},
			ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 256, Masked: true, Mask: mask}, 8, nil},
		{"126 masked short", []byte{0x82, 0xfe, 0x01, 0x00, 0xa1, 0xb2, 0xc3}, ws.Header{}, 0, nil},

		// 64-bit lengths.
		{"127 needs 10", []byte{0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0}, ws.Header{}, 0, nil},
		{"127 min", []byte{0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0}, ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 65536}, 10, nil},
		{"127 max", []byte{0x82, 0x7f, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
			ws.Header{Fin: true, OpCode: ws.OpBinary, Length: math.MaxInt64}, 10, nil},
		{"127 encoding 65535", []byte{0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, ws.Header{}, 0, ErrLengthEncoding},
		{"127 encoding 0", []byte{0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0}, ws.Header{}, 0, ErrLengthEncoding},
		{"127 msb", []byte{0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0}, ws.Header{}, 0, ErrLengthEncoding},
		{"127 all ones", []byte{0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, ws.Header{}, 0, ErrLengthEncoding},
		{"127 masked", []byte{0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 0xa1, 0xb2, 0xc3, 0xd4, 0xee},
			ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 1 << 32, Masked: true, Mask: mask}, 14, nil},
		{"127 masked short", []byte{0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 0xa1}, ws.Header{}, 0, nil},
	}
	for _, c := range cases {
		h, n, err := ParseHeader(c.in)
		if !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.err)
			continue
		}
		if n != c.n {
			t.Errorf("%s: n = %d, want %d", c.name, n, c.n)
		}
		if n > 0 && h != c.want {
			t.Errorf("%s: header = %+v, want %+v", c.name, h, c.want)
		}
		if err != nil && n != 0 {
			t.Errorf("%s: error with n = %d", c.name, n)
		}
	}
}

// appendHeader is an independent encoder for any header, masked or not, so
// parsing can be checked against what was written.
func appendHeader(dst []byte, h ws.Header) []byte {
	b0 := byte(h.OpCode&0x0f) | h.Rsv<<4
	if h.Fin {
		b0 |= 0x80
	}
	var b1 byte
	if h.Masked {
		b1 = 0x80
	}
	switch {
	case h.Length < 126:
		dst = append(dst, b0, b1|byte(h.Length))
	case h.Length <= 0xffff:
		dst = append(dst, b0, b1|126, byte(h.Length>>8), byte(h.Length))
	default:
		dst = append(dst, b0, b1|127)
		for s := 56; s >= 0; s -= 8 {
			dst = append(dst, byte(uint64(h.Length)>>s))
		}
	}
	if h.Masked {
		dst = append(dst, h.Mask[:]...)
	}
	return dst
}

var lengthEdges = []int64{0, 1, 124, 125, 126, 127, 255, 256, 65534, 65535, 65536, 65537,
	1<<31 - 1, 1 << 31, 1<<32 - 1, 1 << 32, 1 << 40, math.MaxInt64 - 1, math.MaxInt64}

func randomHeader(rng *rand.Rand) ws.Header {
	h := ws.Header{
		Fin:    rng.Intn(2) == 0,
		Rsv:    byte(rng.Intn(8)),
		OpCode: ws.OpCode(rng.Intn(16)),
		Masked: rng.Intn(2) == 0,
	}
	switch rng.Intn(3) {
	case 0:
		h.Length = lengthEdges[rng.Intn(len(lengthEdges))]
	case 1:
		h.Length = rng.Int63n(1 << 17)
	default:
		h.Length = rng.Int63()
	}
	if h.Masked {
		rng.Read(h.Mask[:])
	}
	return h
}

// Written headers parse back whole, every strict prefix is "need more", and
// trailing payload bytes are left alone. gobwas/ws agrees on every one.
func TestParseHeaderRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 20000; i++ {
		h := randomHeader(rng)
		enc := appendHeader(nil, h)
		withPayload := append(append([]byte{}, enc...), 0xde, 0xad)
		for _, in := range [][]byte{enc, withPayload} {
			got, n, err := ParseHeader(in)
			if err != nil || n != len(enc) || got != h {
				t.Fatalf("ParseHeader(% x) = %+v, %d, %v; want %+v, %d", in, got, n, err, h, len(enc))
			}
		}
		for k := 0; k < len(enc); k++ {
			if _, n, err := ParseHeader(enc[:k]); n != 0 || err != nil {
				t.Fatalf("ParseHeader(prefix % x) = %d, %v; want 0, nil", enc[:k], n, err)
			}
		}
		var gob bytes.Buffer
		if err := ws.WriteHeader(&gob, h); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gob.Bytes(), enc) {
			t.Fatalf("gobwas writes % x for %+v, test encoder % x", gob.Bytes(), h, enc)
		}
		rh, err := ws.ReadHeader(bytes.NewReader(enc))
		if err != nil || rh != h {
			t.Fatalf("gobwas reads %+v, %v from % x; want %+v", rh, err, enc, h)
		}
	}
}

func TestCheckClient(t *testing.T) {
	ok := ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Length: 10}
	with := func(f func(*ws.Header)) ws.Header { h := ok; f(&h); return h }
	cases := []struct {
		name string
		h    ws.Header
		want error
	}{
		{"text", ok, nil},
		{"binary huge", with(func(h *ws.Header) { h.OpCode = ws.OpBinary; h.Length = math.MaxInt64 }), nil},
		{"continuation", with(func(h *ws.Header) { h.OpCode = ws.OpContinuation; h.Fin = false }), nil},
		{"text not fin", with(func(h *ws.Header) { h.Fin = false }), nil},
		{"close 125", with(func(h *ws.Header) { h.OpCode = ws.OpClose; h.Length = 125 }), nil},
		{"ping 0", with(func(h *ws.Header) { h.OpCode = ws.OpPing; h.Length = 0 }), nil},
		{"pong 125", with(func(h *ws.Header) { h.OpCode = ws.OpPong; h.Length = 125 }), nil},
		{"rsv1", with(func(h *ws.Header) { h.Rsv = 4 }), ErrReservedBits},
		{"rsv3", with(func(h *ws.Header) { h.Rsv = 1 }), ErrReservedBits},
		{"unmasked", with(func(h *ws.Header) { h.Masked = false }), ErrUnmasked},
		{"close 126", with(func(h *ws.Header) { h.OpCode = ws.OpClose; h.Length = 126 }), ErrControlTooLong},
		{"ping huge", with(func(h *ws.Header) { h.OpCode = ws.OpPing; h.Length = math.MaxInt64 }), ErrControlTooLong},
		{"ping fragmented", with(func(h *ws.Header) { h.OpCode = ws.OpPing; h.Fin = false }), ErrControlFragment},
		{"close fragmented", with(func(h *ws.Header) { h.OpCode = ws.OpClose; h.Fin = false; h.Length = 2 }), ErrControlFragment},
		// Order: reserved bits, then opcode, then mask, then control rules.
		{"rsv and unmasked", with(func(h *ws.Header) { h.Rsv = 2; h.Masked = false }), ErrReservedBits},
		{"opcode and unmasked", with(func(h *ws.Header) { h.OpCode = 3; h.Masked = false }), ErrReservedOpCode},
		{"unmasked long ping", with(func(h *ws.Header) { h.OpCode = ws.OpPing; h.Masked = false; h.Length = 200 }), ErrUnmasked},
	}
	for _, op := range []ws.OpCode{3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf} {
		cases = append(cases, struct {
			name string
			h    ws.Header
			want error
		}{"reserved opcode", with(func(h *ws.Header) { h.OpCode = op }), ErrReservedOpCode})
	}
	for _, c := range cases {
		if got := CheckClient(c.h); got != c.want {
			t.Errorf("%s: CheckClient(%+v) = %v, want %v", c.name, c.h, got, c.want)
		}
	}
}

func TestAppendServerHeader(t *testing.T) {
	cases := []struct {
		op   ws.OpCode
		n    int
		want []byte
	}{
		{ws.OpText, 0, []byte{0x81, 0}},
		{ws.OpText, 125, []byte{0x81, 125}},
		{ws.OpBinary, 126, []byte{0x82, 126, 0, 126}},
		{ws.OpText, 65535, []byte{0x81, 126, 0xff, 0xff}},
		{ws.OpText, 65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
		{ws.OpText, 1<<32 + 5, []byte{0x81, 127, 0, 0, 0, 1, 0, 0, 0, 5}},
		{ws.OpText, math.MaxInt64, []byte{0x81, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{ws.OpClose, 2, []byte{0x88, 2}},
		{ws.OpPing, 0, []byte{0x89, 0}},
		{ws.OpPong, 125, []byte{0x8a, 125}},
	}
	for _, c := range cases {
		got := AppendServerHeader([]byte{0xee}, c.op, c.n)
		if !bytes.Equal(got[1:], c.want) || got[0] != 0xee {
			t.Errorf("AppendServerHeader(%v, %d) = % x, want % x", c.op, c.n, got[1:], c.want)
		}
	}
	for _, n := range lengthEdges {
		for _, op := range []ws.OpCode{ws.OpContinuation, ws.OpText, ws.OpBinary, ws.OpClose, ws.OpPing, ws.OpPong} {
			b := AppendServerHeader(nil, op, int(n))
			if len(b) != ServerHeaderSize(int(n)) {
				t.Errorf("ServerHeaderSize(%d) = %d, header is %d bytes", n, ServerHeaderSize(int(n)), len(b))
			}
			want := ws.Header{Fin: true, OpCode: op, Length: n}
			h, hn, err := ParseHeader(b)
			if err != nil || hn != len(b) || h != want {
				t.Errorf("ParseHeader(AppendServerHeader(%v, %d)) = %+v, %d, %v", op, n, h, hn, err)
			}
			if hs := ws.HeaderSize(want); hs != len(b) {
				t.Errorf("gobwas HeaderSize(%d) = %d, ours %d", n, hs, len(b))
			}
		}
	}
}

func TestHeaderAllocs(t *testing.T) {
	in := []byte{0x81, 0xfe, 0x01, 0x00, 1, 2, 3, 4}
	var sink int
	if n := testing.AllocsPerRun(100, func() {
		h, hn, err := ParseHeader(in)
		if err == nil {
			sink += hn + int(h.Length)
		}
		_ = CheckClient(h)
	}); n != 0 {
		t.Errorf("ParseHeader/CheckClient allocate %v times", n)
	}
	buf := make([]byte, 0, MaxHeaderSize)
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendServerHeader(buf[:0], ws.OpText, 70000)
		sink += ServerHeaderSize(len(buf))
	}); n != 0 {
		t.Errorf("AppendServerHeader allocates %v times", n)
	}
	_ = sink
}
