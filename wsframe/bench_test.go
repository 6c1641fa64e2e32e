package wsframe

import (
	"testing"

	"github.com/gobwas/ws"
)

func BenchmarkParseHeader(b *testing.B) {
	in := []byte{0x81, 0xfe, 0x01, 0x00, 0xa1, 0xb2, 0xc3, 0xd4}
	b.ReportAllocs()
	for b.Loop() {
		h, n, err := ParseHeader(in)
		if err != nil || n != 8 || CheckClient(h) != nil {
			b.Fatal(h, n, err)
		}
	}
}

func BenchmarkAppendServerHeader(b *testing.B) {
	buf := make([]byte, 0, MaxHeaderSize)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendServerHeader(buf[:0], ws.OpText, 300)
	}
}

func BenchmarkParseRequest(b *testing.B) {
	head := []byte(sampleHead)
	var r Request
	b.ReportAllocs()
	b.SetBytes(int64(len(head)))
	for b.Loop() {
		if ParseRequest(head, &r) != nil || r.Header("X-Pyrycode-Server") == nil || !r.HasToken("Connection", "upgrade") {
			b.Fatal("parse")
		}
	}
}
