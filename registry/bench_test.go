package registry

import (
	"fmt"
	"testing"
)

// benchRegistry holds 4096 server-ids, each with a full set of phones.
func benchRegistry(b *testing.B) (r *reg, sids []string, holders []*conn, ids [][]byte) {
	b.Helper()
	const servers, phones = 4096, 16
	r = newReg(phones)
	for i := 0; i < servers; i++ {
		sid := fmt.Sprintf("srv-%08x", i)
		h := &conn{sid}
		if _, _, err := r.Claim(sid, h, nil); err != nil {
			b.Fatal(err)
		}
		var last string
		for k := 0; k < phones; k++ {
			id, _, err := r.AddPhone(sid, &conn{})
			if err != nil {
				b.Fatal(err)
			}
			last = id
		}
		sids, holders, ids = append(sids, sid), append(holders, h), append(ids, []byte(last))
	}
	return r, sids, holders, ids
}

func BenchmarkRegistryBinary(b *testing.B) {
	r, sids, _, _ := benchRegistry(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := r.Binary(sids[i&4095]); !ok {
			b.Fatal("missing")
		}
		i++
	}
}

// The phone looked up is the last of 16: the worst case of the scan.
func BenchmarkRegistryPhone(b *testing.B) {
	r, sids, holders, ids := benchRegistry(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		j := i & 4095
		if _, ok := r.Phone(sids[j], holders[j], ids[j]); !ok {
			b.Fatal("missing")
		}
		i++
	}
}

func BenchmarkRegistryPhoneParallel(b *testing.B) {
	r, sids, holders, ids := benchRegistry(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			j := i & 4095
			if _, ok := r.Phone(sids[j], holders[j], ids[j]); !ok {
				panic("missing")
			}
			i += 7
		}
	})
}
