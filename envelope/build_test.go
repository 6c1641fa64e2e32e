package envelope

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
)

func TestAppendToBinary(t *testing.T) {
	cases := []struct {
		connID string
		frame  string
		want   string
	}{
		{"client-s-0123abcd", `{"t":1}`, `{"conn_id":"client-s-0123abcd","frame":{"t":1}}`},
		{"c", `1`, `{"conn_id":"c","frame":1}`},
		{"c", `null`, `{"conn_id":"c","frame":null}`},
		{"c", " [ 1 ,\n2 ] ", `{"conn_id":"c","frame": [ 1 ,` + "\n" + `2 ] }`},
		{"c", `"\u003c<>&"`, `{"conn_id":"c","frame":"\u003c<>&"}`},
		{"", `{}`, `{"conn_id":"","frame":{}}`},
	}
	for _, c := range cases {
		for _, prefix := range []string{"", "\x81\x7e\x00\x20"} {
			dst := []byte(prefix)
			got := AppendToBinary(dst, c.connID, []byte(c.frame))
			if string(got) != prefix+c.want {
				t.Errorf("AppendToBinary(%q, %q, %q) = %q, want %q", prefix, c.connID, c.frame, got, prefix+c.want)
			}
			if n := ToBinarySize(c.connID, []byte(c.frame)); n != len(c.want) {
				t.Errorf("ToBinarySize(%q, %q) = %d, want %d", c.connID, c.frame, n, len(c.want))
			}
		}
		if c.connID != "" {
			checkSpliced(t, AppendToBinary(nil, c.connID, []byte(c.frame)), c.connID, []byte(c.frame))
		}
	}
}

// The frame is copied, not aliased: the caller may reuse it afterwards.
func TestAppendToBinaryCopies(t *testing.T) {
	frame := []byte(`[1,2,3]`)
	out := AppendToBinary(make([]byte, 0, 64), "c", frame)
	copy(frame, "[9,9,9]")
	if !bytes.Contains(out, []byte(`[1,2,3]`)) {
		t.Fatalf("envelope changed with the caller's frame: %q", out)
	}
}

func TestAppendCloseNotice(t *testing.T) {
	cases := []struct {
		code uint16
		want string
	}{
		{0, `{"conn_id":"c","close_code":0}`},
		{1, `{"conn_id":"c","close_code":1}`},
		{9, `{"conn_id":"c","close_code":9}`},
		{10, `{"conn_id":"c","close_code":10}`},
		{99, `{"conn_id":"c","close_code":99}`},
		{100, `{"conn_id":"c","close_code":100}`},
		{999, `{"conn_id":"c","close_code":999}`},
		{1000, `{"conn_id":"c","close_code":1000}`},
		{1001, `{"conn_id":"c","close_code":1001}`},
		{4999, `{"conn_id":"c","close_code":4999}`},
		{9999, `{"conn_id":"c","close_code":9999}`},
		{10000, `{"conn_id":"c","close_code":10000}`},
		{65535, `{"conn_id":"c","close_code":65535}`},
	}
	for _, c := range cases {
		got := AppendCloseNotice([]byte("xy"), "c", c.code)
		if string(got) != "xy"+c.want {
			t.Errorf("AppendCloseNotice(%d) = %q, want %q", c.code, got, c.want)
		}
	}
}

// Every code: the size matches, the notice is exactly two keys in order, and
// Scan reads back what was written.
func TestCloseNoticeEveryCode(t *testing.T) {
	const connID = "client-srv-0123abcd"
	buf := make([]byte, 0, 64)
	var e FromBinary
	for code := 0; code <= 0xffff; code++ {
		buf = AppendCloseNotice(buf[:0], connID, uint16(code))
		if n := CloseNoticeSize(connID, uint16(code)); n != len(buf) {
			t.Fatalf("CloseNoticeSize(%d) = %d, notice is %d bytes: %q", code, n, len(buf), buf)
		}
		want := `{"conn_id":"` + connID + `","close_code":` + strconv.Itoa(code) + `}`
		if string(buf) != want {
			t.Fatalf("notice %q, want %q", buf, want)
		}
		err := e.Scan(buf)
		switch {
		case code == 0 && err != ErrNothingToDo:
			t.Fatalf("Scan(notice 0) = %v", err)
		case code != 0 && (err != nil || e.CloseCode != uint16(code) || string(e.ConnID) != connID || e.Frame != nil):
			t.Fatalf("Scan(%q) = %v, %+v", buf, err, e)
		}
	}
	var m map[string]any
	if err := json.Unmarshal(AppendCloseNotice(nil, connID, 1001), &m); err != nil || len(m) != 2 {
		t.Fatalf("notice decodes to %v, %v", m, err)
	}
}

func TestBuildAllocs(t *testing.T) {
	const connID = "client-srv-0123abcd"
	frame := []byte(`{"type":"msg","body":"hello","n":[1,2,3]}`)
	buf := make([]byte, 0, ToBinarySize(connID, frame)+CloseNoticeSize(connID, 65535))
	if n := testing.AllocsPerRun(100, func() { buf = AppendToBinary(buf[:0], connID, frame) }); n != 0 {
		t.Errorf("AppendToBinary into a sized buffer allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { buf = AppendCloseNotice(buf[:0], connID, 4421) }); n != 0 {
		t.Errorf("AppendCloseNotice into a sized buffer allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = ToBinarySize(connID, frame) + CloseNoticeSize(connID, 1001) }); n != 0 {
		t.Errorf("sizes allocate %v times", n)
	}
}
