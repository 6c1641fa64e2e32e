package registry

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// conn stands in for the relay's connection handle.
type conn struct{ name string }

type reg = Registry[*conn, *conn]

func newReg(maxPhones int) *reg { return New[*conn, *conn](maxPhones) }

// checkConnID asserts the client-<serverID>-<8 lowercase hex> form.
func checkConnID(t testing.TB, serverID, id string) {
	t.Helper()
	prefix := "client-" + serverID + "-"
	if !strings.HasPrefix(id, prefix) || len(id) != len(prefix)+8 {
		t.Fatalf("conn_id %q is not %s<8 hex>", id, prefix)
	}
	for _, c := range id[len(prefix):] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			t.Fatalf("conn_id %q: suffix is not lowercase hex", id)
		}
	}
}

func TestClaim(t *testing.T) {
	r := newReg(16)
	b1, b2 := &conn{"b1"}, &conn{"b2"}
	if _, ok := r.Binary("s"); ok {
		t.Fatal("empty registry has a binary")
	}
	if err := r.Claim("s", b1); err != nil {
		t.Fatal(err)
	}
	if err := r.Claim("s", b2); !errors.Is(err, ErrClaimed) {
		t.Fatalf("second claim: %v, want ErrClaimed", err)
	}
	if err := r.Claim("s", b1); !errors.Is(err, ErrClaimed) {
		t.Fatalf("repeated claim by the holder: %v, want ErrClaimed", err)
	}
	if b, ok := r.Binary("s"); !ok || b != b1 {
		t.Fatalf("Binary = %v, %v; want b1", b, ok)
	}
	// Server-ids are exact strings.
	for _, other := range []string{"S", "s ", "", "s\x00"} {
		if _, ok := r.Binary(other); ok {
			t.Fatalf("Binary(%q) found s's binary", other)
		}
	}
	if err := r.Claim("t", b2); err != nil {
		t.Fatalf("claim of another id: %v", err)
	}
	if r.Binaries() != 2 || r.Phones() != 0 {
		t.Fatalf("counts %d/%d, want 2/0", r.Binaries(), r.Phones())
	}
}

func TestRelease(t *testing.T) {
	r := newReg(16)
	b1, b2 := &conn{"b1"}, &conn{"b2"}
	if err := r.Claim("s", b1); err != nil {
		t.Fatal(err)
	}
	phones := []*conn{{"p1"}, {"p2"}, {"p3"}}
	for _, p := range phones {
		if _, b, err := r.AddPhone("s", p); err != nil || b != b1 {
			t.Fatalf("AddPhone = %v, %v", b, err)
		}
	}
	sentinel := &conn{"already in dst"}
	dst := []*conn{sentinel}

	// Not the holder: nothing happens.
	if got := r.Release("s", b2, dst); len(got) != 1 || got[0] != sentinel {
		t.Fatalf("Release by a non-holder returned %v", got)
	}
	if got := r.Release("nope", b1, dst); len(got) != 1 {
		t.Fatalf("Release of an unknown id returned %v", got)
	}
	if b, ok := r.Binary("s"); !ok || b != b1 || r.Binaries() != 1 || r.Phones() != 3 {
		t.Fatalf("non-holder release changed the slot: %v %v %d %d", b, ok, r.Binaries(), r.Phones())
	}

	// The holder: phones come back appended, the slot goes.
	got := r.Release("s", b1, dst)
	if len(got) != 4 || got[0] != sentinel {
		t.Fatalf("Release returned %v", got)
	}
	seen := map[*conn]bool{}
	for _, p := range got[1:] {
		seen[p] = true
	}
	for _, p := range phones {
		if !seen[p] {
			t.Fatalf("Release did not return %s", p.name)
		}
	}
	if _, ok := r.Binary("s"); ok || r.Binaries() != 0 || r.Phones() != 0 {
		t.Fatalf("after release: binaries %d phones %d", r.Binaries(), r.Phones())
	}
	if got := r.Release("s", b1, nil); len(got) != 0 {
		t.Fatalf("second release returned %v", got)
	}
	if _, _, err := r.AddPhone("s", &conn{"late"}); !errors.Is(err, ErrNoServer) {
		t.Fatalf("AddPhone after release: %v", err)
	}

	// The id can be claimed again, by anyone, and the old holder's release
	// must not evict the new one.
	if err := r.Claim("s", b2); err != nil {
		t.Fatal(err)
	}
	if got := r.Release("s", b1, nil); len(got) != 0 {
		t.Fatalf("stale release returned %v", got)
	}
	if b, ok := r.Binary("s"); !ok || b != b2 || r.Binaries() != 1 {
		t.Fatal("stale release evicted the new holder")
	}
}

func TestAddPhone(t *testing.T) {
	r := newReg(16)
	if _, _, err := r.AddPhone("s", &conn{"p"}); !errors.Is(err, ErrNoServer) {
		t.Fatalf("AddPhone with no binary: %v", err)
	}
	b := &conn{"b"}
	if err := r.Claim("s", b); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for i := 0; i < 16; i++ {
		p := &conn{fmt.Sprint("p", i)}
		id, got, err := r.AddPhone("s", p)
		if err != nil || got != b {
			t.Fatalf("phone %d: %v, %v", i, got, err)
		}
		checkConnID(t, "s", id)
		if ids[id] {
			t.Fatalf("conn_id %q handed out twice", id)
		}
		ids[id] = true
		if q, ok := r.Phone("s", b, []byte(id)); !ok || q != p {
			t.Fatalf("Phone(%q) = %v, %v", id, q, ok)
		}
	}
	if r.Phones() != 16 {
		t.Fatalf("Phones = %d", r.Phones())
	}
	id, got, err := r.AddPhone("s", &conn{"p16"})
	if !errors.Is(err, ErrPhonesAtCap) || id != "" || got != nil {
		t.Fatalf("17th phone: %q, %v, %v; want ErrPhonesAtCap", id, got, err)
	}
	if r.Phones() != 16 {
		t.Fatalf("refused phone counted: %d", r.Phones())
	}
}

func TestPhoneCapExact(t *testing.T) {
	for _, max := range []int{0, 1, 2, 5, 16} {
		r := newReg(max)
		b := &conn{"b"}
		if _, _, err := r.AddPhone("s", &conn{}); !errors.Is(err, ErrNoServer) {
			t.Fatalf("max %d: no-binary check must come first, got %v", max, err)
		}
		if err := r.Claim("s", b); err != nil {
			t.Fatal(err)
		}
		var ids []string
		var ps []*conn
		for i := 0; i < max; i++ {
			p := &conn{}
			id, _, err := r.AddPhone("s", p)
			if err != nil {
				t.Fatalf("max %d: phone %d refused: %v", max, i, err)
			}
			ids, ps = append(ids, id), append(ps, p)
		}
		for k := 0; k < 3; k++ {
			if _, _, err := r.AddPhone("s", &conn{}); !errors.Is(err, ErrPhonesAtCap) {
				t.Fatalf("max %d: phone over the cap: %v", max, err)
			}
		}
		if max == 0 {
			continue
		}
		// A freed place can be taken again, exactly one.
		r.RemovePhone("s", ids[0], ps[0])
		if _, _, err := r.AddPhone("s", &conn{}); err != nil {
			t.Fatalf("max %d: freed place refused: %v", max, err)
		}
		if _, _, err := r.AddPhone("s", &conn{}); !errors.Is(err, ErrPhonesAtCap) {
			t.Fatalf("max %d: over the cap after refill: %v", max, err)
		}
		if r.Phones() != max {
			t.Fatalf("max %d: Phones = %d", max, r.Phones())
		}
	}
}

func TestConnIDForm(t *testing.T) {
	r := newReg(16)
	for _, sid := range []string{"s", "srv-1", "0123456789abcdef", strings.Repeat("x", 128), "a.b_c~d!e", "-", "client-x-00000000"} {
		if err := r.Claim(sid, &conn{}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 4; i++ {
			id, _, err := r.AddPhone(sid, &conn{})
			if err != nil {
				t.Fatal(err)
			}
			checkConnID(t, sid, id)
		}
	}
}

// Live conn_ids never repeat, over many registrations; and the hex digits
// look random, not counted.
func TestConnIDUnique(t *testing.T) {
	r := newReg(16)
	b := &conn{}
	if err := r.Claim("s", b); err != nil {
		t.Fatal(err)
	}
	type live struct {
		id string
		p  *conn
	}
	var cur []live
	all := map[string]int{}
	for i := 0; i < 5000; i++ {
		if len(cur) == 16 {
			k := i % 16
			if got := r.RemovePhone("s", cur[k].id, cur[k].p); got != b {
				t.Fatalf("RemovePhone returned %v", got)
			}
			cur = append(cur[:k], cur[k+1:]...)
		}
		p := &conn{}
		id, _, err := r.AddPhone("s", p)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range cur {
			if l.id == id {
				t.Fatalf("conn_id %q given to two live phones", id)
			}
		}
		cur = append(cur, live{id, p})
		all[id]++
	}
	// 5000 draws from 2^32: a repeat is a one-in-a-thousand event; several
	// mean the digits are not random.
	if len(all) < 4995 {
		t.Fatalf("only %d distinct conn_ids in 5000", len(all))
	}
	if r.Phones() != 16 {
		t.Fatalf("Phones = %d", r.Phones())
	}
}

func TestRemovePhone(t *testing.T) {
	r := newReg(16)
	b1, b2 := &conn{"b1"}, &conn{"b2"}
	p1, p2, stranger := &conn{"p1"}, &conn{"p2"}, &conn{"stranger"}
	if got := r.RemovePhone("s", "client-s-00000000", p1); got != nil {
		t.Fatalf("RemovePhone on a missing slot returned %v", got)
	}
	if err := r.Claim("s", b1); err != nil {
		t.Fatal(err)
	}
	id1, _, _ := r.AddPhone("s", p1)
	id2, _, _ := r.AddPhone("s", p2)

	// The wrong phone under a right conn_id, or an unknown conn_id, removes
	// nothing but still reports the holder.
	if got := r.RemovePhone("s", id1, stranger); got != b1 || r.Phones() != 2 {
		t.Fatalf("wrong phone: %v, phones %d", got, r.Phones())
	}
	if got := r.RemovePhone("s", "client-s-ffffffff", p1); got != b1 || r.Phones() != 2 {
		t.Fatalf("unknown conn_id: %v, phones %d", got, r.Phones())
	}
	if got := r.RemovePhone("s", id1, p1); got != b1 || r.Phones() != 1 {
		t.Fatalf("RemovePhone = %v, phones %d", got, r.Phones())
	}
	if _, ok := r.Phone("s", b1, []byte(id1)); ok {
		t.Fatal("removed phone still found")
	}
	if q, ok := r.Phone("s", b1, []byte(id2)); !ok || q != p2 {
		t.Fatal("the other phone went too")
	}
	if got := r.RemovePhone("s", id1, p1); got != b1 || r.Phones() != 1 {
		t.Fatalf("second RemovePhone = %v, phones %d", got, r.Phones())
	}

	// After the slot changes hands the caller learns the new holder, and
	// can tell it is not the binary p2 was attached to.
	if ps := r.Release("s", b1, nil); len(ps) != 1 || ps[0] != p2 {
		t.Fatalf("Release = %v", ps)
	}
	if err := r.Claim("s", b2); err != nil {
		t.Fatal(err)
	}
	if got := r.RemovePhone("s", id2, p2); got != b2 {
		t.Fatalf("RemovePhone after takeover = %v, want b2", got)
	}
	if r.Phones() != 0 || r.Binaries() != 1 {
		t.Fatalf("counts %d/%d", r.Binaries(), r.Phones())
	}
}

func TestPhoneLookupBoundaries(t *testing.T) {
	r := newReg(16)
	bA, bB := &conn{"bA"}, &conn{"bB"}
	pA, pB := &conn{"pA"}, &conn{"pB"}
	_ = r.Claim("A", bA)
	_ = r.Claim("B", bB)
	idA, _, _ := r.AddPhone("A", pA)
	idB, _, _ := r.AddPhone("B", pB)

	cases := []struct {
		name   string
		server string
		b      *conn
		connID string
		want   *conn
	}{
		{"own phone", "A", bA, idA, pA},
		{"own phone B", "B", bB, idB, pB},
		{"other binary on my id", "A", bB, idA, nil},
		{"other server's phone", "A", bA, idB, nil},
		{"other server's phone via its id", "B", bA, idB, nil},
		{"nil binary", "A", nil, idA, nil},
		{"prefix of conn_id", "A", bA, idA[:len(idA)-1], nil},
		{"conn_id plus byte", "A", bA, idA + "0", nil},
		{"upper-cased", "A", bA, strings.ToUpper(idA), nil},
		{"empty conn_id", "A", bA, "", nil},
		{"unknown server", "C", bA, idA, nil},
	}
	for _, c := range cases {
		p, ok := r.Phone(c.server, c.b, []byte(c.connID))
		if ok != (c.want != nil) || p != c.want {
			t.Errorf("%s: Phone = %v, %v; want %v", c.name, p, ok, c.want)
		}
	}
	// A binary that released its id cannot reach phones of the new holder.
	_ = r.Release("A", bA, nil)
	bA2 := &conn{"bA2"}
	_ = r.Claim("A", bA2)
	idA2, _, _ := r.AddPhone("A", &conn{})
	if _, ok := r.Phone("A", bA, []byte(idA2)); ok {
		t.Fatal("released binary reached the new holder's phone")
	}
}

// Value types work as handles too, with the zero value meaning none.
func TestValueHandles(t *testing.T) {
	r := New[int, string](2)
	if err := r.Claim("s", 7); err != nil {
		t.Fatal(err)
	}
	id, b, err := r.AddPhone("s", "phone")
	if err != nil || b != 7 {
		t.Fatal(b, err)
	}
	if p, ok := r.Phone("s", 7, []byte(id)); !ok || p != "phone" {
		t.Fatal(p, ok)
	}
	if p, ok := r.Phone("s", 8, []byte(id)); ok || p != "" {
		t.Fatal(p, ok)
	}
	if got := r.RemovePhone("x", id, "phone"); got != 0 {
		t.Fatal(got)
	}
}

func TestLookupAllocs(t *testing.T) {
	r := newReg(16)
	b := &conn{}
	_ = r.Claim("srv-0123456789", b)
	var last string
	for i := 0; i < 16; i++ {
		last, _, _ = r.AddPhone("srv-0123456789", &conn{})
	}
	id := []byte(last)
	missing := []byte("client-srv-0123456789-zzzzzzzz")
	if n := testing.AllocsPerRun(100, func() {
		_, _ = r.Binary("srv-0123456789")
		_, _ = r.Binary("absent")
	}); n != 0 {
		t.Errorf("Binary allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := r.Phone("srv-0123456789", b, id); !ok {
			panic("not found")
		}
		_, _ = r.Phone("srv-0123456789", b, missing)
		_, _ = r.Phone("absent", b, id)
	}); n != 0 {
		t.Errorf("Phone allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = r.Binaries() + r.Phones() }); n != 0 {
		t.Errorf("counts allocate %v times", n)
	}
}

// Many goroutines on many server-ids, with contention on a few shared ones.
// Run with -race. Invariants: one winner per claim, the phone cap holds
// under contention, lookups see only consistent state, and the counts
// return to zero.
func TestConcurrent(t *testing.T) {
	const (
		workers   = 16
		ownIDs    = 24 // per worker
		shared    = 8
		maxPhones = 16
		rounds    = 30
	)
	r := newReg(maxPhones)
	done := make(chan struct{})
	var failed atomic.Value
	fail := func(format string, args ...any) { failed.CompareAndSwap(nil, fmt.Sprintf(format, args...)) }

	var claimWins [shared]atomic.Int32
	var sharedBinaries [shared]atomic.Pointer[conn]
	var sharedPhones [shared]atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			<-start
			// Everyone races for the shared ids.
			me := &conn{fmt.Sprint("worker", w)}
			for s := 0; s < shared; s++ {
				sid := fmt.Sprint("shared-", s)
				if err := r.Claim(sid, me); err == nil {
					claimWins[s].Add(1)
					sharedBinaries[s].Store(me)
				} else if !errors.Is(err, ErrClaimed) {
					fail("claim %s: %v", sid, err)
				}
			}
			// And floods them with phones.
			for s := 0; s < shared; s++ {
				sid := fmt.Sprint("shared-", s)
				for k := 0; k < 4; k++ {
					id, _, err := r.AddPhone(sid, &conn{})
					switch {
					case err == nil:
						sharedPhones[s].Add(1)
						if !strings.HasPrefix(id, "client-"+sid+"-") {
							fail("conn_id %q for %s", id, sid)
						}
					case !errors.Is(err, ErrPhonesAtCap):
						fail("AddPhone %s: %v", sid, err)
					}
				}
			}
			// Own ids: claim, attach, look up, detach, release, repeatedly.
			for round := 0; round < rounds; round++ {
				for i := 0; i < ownIDs; i++ {
					sid := fmt.Sprintf("w%d-%d", w, i)
					b := &conn{sid}
					if err := r.Claim(sid, b); err != nil {
						fail("claim %s: %v", sid, err)
						return
					}
					var ids []string
					var ps []*conn
					for k := 0; k < 1+(i+round)%4; k++ {
						p := &conn{}
						id, got, err := r.AddPhone(sid, p)
						if err != nil || got != b {
							fail("AddPhone %s: %v %v", sid, got, err)
							return
						}
						ids, ps = append(ids, id), append(ps, p)
					}
					for k, id := range ids {
						if q, ok := r.Phone(sid, b, []byte(id)); !ok || q != ps[k] {
							fail("Phone %s %s: %v %v", sid, id, q, ok)
						}
						if _, ok := r.Phone(sid, me, []byte(id)); ok {
							fail("Phone %s reachable by a non-holder", id)
						}
					}
					if got, ok := r.Binary(sid); !ok || got != b {
						fail("Binary %s: %v %v", sid, got, ok)
					}
					if len(ids) > 1 {
						if got := r.RemovePhone(sid, ids[0], ps[0]); got != b {
							fail("RemovePhone %s: %v", sid, got)
						}
						ps = ps[1:]
					}
					rel := r.Release(sid, b, nil)
					if len(rel) != len(ps) {
						fail("Release %s returned %d phones, want %d", sid, len(rel), len(ps))
					}
				}
				// Readers of the shared ids see the winner.
				for s := 0; s < shared; s++ {
					if b, ok := r.Binary(fmt.Sprint("shared-", s)); !ok || b == nil {
						fail("shared-%d lost its binary", s)
					}
				}
			}
		}(w)
	}
	go func() { wg.Wait(); close(done) }()
	close(start)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("concurrent test did not finish in 60s")
	}
	if msg := failed.Load(); msg != nil {
		t.Fatal(msg)
	}
	for s := 0; s < shared; s++ {
		if n := claimWins[s].Load(); n != 1 {
			t.Fatalf("shared-%d claimed %d times", s, n)
		}
		if n := sharedPhones[s].Load(); n != maxPhones {
			t.Fatalf("shared-%d took %d phones, cap %d (attempts %d)", s, n, maxPhones, workers*4)
		}
	}
	if r.Binaries() != shared || r.Phones() != shared*maxPhones {
		t.Fatalf("counts %d/%d, want %d/%d", r.Binaries(), r.Phones(), shared, shared*maxPhones)
	}
	for s := 0; s < shared; s++ {
		sid := fmt.Sprint("shared-", s)
		if ps := r.Release(sid, sharedBinaries[s].Load(), nil); len(ps) != maxPhones {
			t.Fatalf("Release %s returned %d phones", sid, len(ps))
		}
	}
	if r.Binaries() != 0 || r.Phones() != 0 {
		t.Fatalf("counts after teardown %d/%d", r.Binaries(), r.Phones())
	}
}
