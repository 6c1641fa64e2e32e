package bench

import (
	"fmt"
	"testing"

	"github.com/gobwas/ws"

	"switchboard/envelope"
	"switchboard/internal/wsclient"
	"switchboard/registry"
	"switchboard/wsframe"
)

// The pieces of the forwarding path, each on its own. Every one of them
// must report 0 allocs/op: they run once or more per forwarded frame.

func BenchmarkParseFrameHeader(b *testing.B) {
	frame := wsclient.AppendMasked(nil, wsclient.OpText, benchFrame)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		h, n, err := wsframe.ParseHeader(frame)
		if err != nil || n != 8 || wsframe.CheckClient(h) != nil {
			b.Fatal("bad header")
		}
		ws.Cipher(frame[n:], h.Mask, 0)
	}
}

func BenchmarkValidateJSON(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchFrame)))
	for b.Loop() {
		if !envelope.Valid(benchFrame) {
			b.Fatal("invalid")
		}
	}
}

func BenchmarkBuildEnvelope(b *testing.B) {
	const connID = "client-bench-server-0123abcd"
	dst := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchFrame)))
	for b.Loop() {
		dst = wsframe.AppendServerHeader(dst[:0], ws.OpText, envelope.ToBinarySize(connID, benchFrame))
		dst = envelope.AppendToBinary(dst, connID, benchFrame)
	}
}

func BenchmarkScanEnvelope(b *testing.B) {
	msg := envelope.AppendToBinary(nil, "client-bench-server-0123abcd", benchFrame)
	var env envelope.FromBinary
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if err := env.Scan(msg); err != nil || len(env.Frame) != len(benchFrame) {
			b.Fatal(err)
		}
	}
}

func BenchmarkRegistryLookup(b *testing.B) {
	type handle struct{ id int }
	reg := registry.New[*handle, *handle](16)
	var ids []string
	var connIDs [][]byte
	bins := make([]*handle, 10000)
	for i := range bins {
		id := fmt.Sprintf("server-%d", i)
		bins[i] = &handle{i}
		if _, _, err := reg.Claim(id, bins[i], nil); err != nil {
			b.Fatal(err)
		}
		connID, _, err := reg.AddPhone(id, &handle{})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
		connIDs = append(connIDs, []byte(connID))
	}
	b.Run("binary", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok := reg.Binary(ids[i%len(ids)]); !ok {
				b.Fatal("missing")
			}
			i++
		}
	})
	b.Run("phone", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			k := i % len(ids)
			if _, ok := reg.Phone(ids[k], bins[k], connIDs[k]); !ok {
				b.Fatal("missing")
			}
			i++
		}
	})
	b.Run("phone-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				k := i % len(ids)
				if _, ok := reg.Phone(ids[k], bins[k], connIDs[k]); !ok {
					b.Error("missing")
					return
				}
				i++
			}
		})
	})
}
