package envelope

import (
	"strings"
	"testing"
)

// frame256 is a typical phone frame of exactly 256 bytes: a small object
// with an encrypted-looking string payload.
var frame256 = func() []byte {
	head := `{"type":"ciphertext","v":2,"seq":1234,"nonce":"AAECAwQFBgcICQoL","body":"`
	tail := `","ack":[1,2,3],"final":true}`
	return []byte(head + strings.Repeat("q", 256-len(head)-len(tail)) + tail)
}()

func BenchmarkValid256B(b *testing.B) {
	if len(frame256) != 256 || !Valid(frame256) {
		b.Fatalf("bad benchmark input: %d bytes, valid %v", len(frame256), Valid(frame256))
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(frame256)))
	for b.Loop() {
		if !Valid(frame256) {
			b.Fatal("invalid")
		}
	}
}

func BenchmarkScan(b *testing.B) {
	msg := AppendToBinary(nil, "client-0123456789abcdef-0123abcd", frame256)
	msg = append(msg[:len(msg)-1], `,"close_code":0}`...)
	var e FromBinary
	if err := e.Scan(msg); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if err := e.Scan(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendToBinary(b *testing.B) {
	const connID = "client-0123456789abcdef-0123abcd"
	buf := make([]byte, 0, ToBinarySize(connID, frame256))
	b.ReportAllocs()
	b.SetBytes(int64(cap(buf)))
	for b.Loop() {
		buf = AppendToBinary(buf[:0], connID, frame256)
	}
}

func BenchmarkAppendCloseNotice(b *testing.B) {
	const connID = "client-0123456789abcdef-0123abcd"
	buf := make([]byte, 0, CloseNoticeSize(connID, 65535))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendCloseNotice(buf[:0], connID, 1001)
	}
}
