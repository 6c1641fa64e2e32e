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

type moves = Moves[*conn, *conn]

// release is Release for a slot nobody waits on: the phones it evicts are
// appended to dst.
func release(r *reg, serverID string, b *conn, grace bool, dst []*conn) ([]*conn, uint64, bool) {
	m, gen, held := r.Release(serverID, b, grace, moves{Evicted: dst})
	if m.Winner != nil || len(m.Refused) != 0 {
		panic("release: a claimant was waiting")
	}
	return m.Evicted, gen, held
}

// takeover is a probe that expires in one step: b queues behind old, then
// the slot is taken from old. The phones it evicts are appended to evicted.
func takeover(t testing.TB, r *reg, serverID string, old, b *conn, evicted []*conn) ([]*conn, bool) {
	t.Helper()
	if _, h, probe, err := r.ClaimOrWait(serverID, b, nil); !errors.Is(err, ErrClaimed) || h != old || !probe {
		t.Fatalf("ClaimOrWait(%s) = %v, %v, %v; want queued behind %s", b.name, h, probe, err, old.name)
	}
	m, ok := r.Takeover(serverID, old, moves{Evicted: evicted})
	if !ok || m.Winner != b || len(m.Refused) != 0 {
		t.Fatalf("Takeover(%s) = %+v, %v", old.name, m, ok)
	}
	return m.Evicted, ok
}

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
	if b, live := r.Binary("s"); b != nil || live {
		t.Fatal("empty registry has a binary")
	}
	sentinel := &conn{"already in evicted"}
	ev, h, err := r.Claim("s", b1, []*conn{sentinel})
	if err != nil || h != nil || len(ev) != 1 || ev[0] != sentinel {
		t.Fatalf("first claim = %v, %v, %v; want no previous holder", ev, h, err)
	}
	ev, h, err = r.Claim("s", b2, []*conn{sentinel})
	if !errors.Is(err, ErrClaimed) || h != b1 || len(ev) != 1 || ev[0] != sentinel {
		t.Fatalf("second claim: %v, %v, %v; want ErrClaimed by b1", ev, h, err)
	}
	if _, h, err := r.Claim("s", b1, nil); !errors.Is(err, ErrClaimed) || h != b1 {
		t.Fatalf("repeated claim by the holder: %v, %v; want ErrClaimed", h, err)
	}
	if b, live := r.Binary("s"); !live || b != b1 {
		t.Fatalf("Binary = %v, %v; want b1", b, live)
	}
	// Server-ids are exact strings.
	for _, other := range []string{"S", "s ", "", "s\x00"} {
		if b, live := r.Binary(other); b != nil || live {
			t.Fatalf("Binary(%q) found s's binary", other)
		}
	}
	if _, _, err := r.Claim("t", b2, nil); err != nil {
		t.Fatalf("claim of another id: %v", err)
	}
	if r.Binaries() != 2 || r.Phones() != 0 {
		t.Fatalf("counts %d/%d, want 2/0", r.Binaries(), r.Phones())
	}
}

func TestRelease(t *testing.T) {
	r := newReg(16)
	b1, b2 := &conn{"b1"}, &conn{"b2"}
	if _, _, err := r.Claim("s", b1, nil); err != nil {
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

	// Not the holder: nothing happens, with or without grace.
	for _, grace := range []bool{false, true} {
		if got, gen, held := release(r, "s", b2, grace, dst); len(got) != 1 || got[0] != sentinel || gen != 0 || held {
			t.Fatalf("Release(grace=%v) by a non-holder returned %v, %d, %v", grace, got, gen, held)
		}
		if got, gen, held := release(r, "nope", b1, grace, dst); len(got) != 1 || gen != 0 || held {
			t.Fatalf("Release(grace=%v) of an unknown id returned %v, %d, %v", grace, got, gen, held)
		}
	}
	if b, live := r.Binary("s"); !live || b != b1 || r.Binaries() != 1 || r.Phones() != 3 {
		t.Fatalf("non-holder release changed the slot: %v %v %d %d", b, live, r.Binaries(), r.Phones())
	}

	// The holder, without grace: phones come back appended, the slot goes.
	got, gen, held := release(r, "s", b1, false, dst)
	if len(got) != 4 || got[0] != sentinel || gen != 0 || held {
		t.Fatalf("Release returned %v, %d, %v", got, gen, held)
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
	if b, live := r.Binary("s"); b != nil || live || r.Binaries() != 0 || r.Phones() != 0 {
		t.Fatalf("after release: binary %v, binaries %d phones %d", b, r.Binaries(), r.Phones())
	}
	if got, _, held := release(r, "s", b1, false, nil); len(got) != 0 || held {
		t.Fatalf("second release returned %v, %v", got, held)
	}
	if got, _, held := release(r, "s", b1, true, nil); len(got) != 0 || held {
		t.Fatalf("grace release after release returned %v, %v", got, held)
	}
	if _, _, err := r.AddPhone("s", &conn{"late"}); !errors.Is(err, ErrNoServer) {
		t.Fatalf("AddPhone after release: %v", err)
	}

	// The id can be claimed again, by anyone, and the old holder's release
	// must not evict the new one.
	if ev, _, err := r.Claim("s", b2, nil); err != nil || len(ev) != 0 {
		t.Fatal(ev, err)
	}
	for _, grace := range []bool{false, true} {
		if got, _, held := release(r, "s", b1, grace, nil); len(got) != 0 || held {
			t.Fatalf("stale release (grace=%v) returned %v, %v", grace, got, held)
		}
	}
	if b, live := r.Binary("s"); !live || b != b2 || r.Binaries() != 1 {
		t.Fatal("stale release evicted the new holder")
	}
}

func TestAddPhone(t *testing.T) {
	r := newReg(16)
	if _, _, err := r.AddPhone("s", &conn{"p"}); !errors.Is(err, ErrNoServer) {
		t.Fatalf("AddPhone with no binary: %v", err)
	}
	b := &conn{"b"}
	if _, _, err := r.Claim("s", b, nil); err != nil {
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
		if _, _, err := r.Claim("s", b, nil); err != nil {
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
		if _, _, err := r.Claim(sid, &conn{}, nil); err != nil {
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
	if _, _, err := r.Claim("s", b, nil); err != nil {
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
	if _, _, err := r.Claim("s", b1, nil); err != nil {
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
	if ps, _, _ := release(r, "s", b1, false, nil); len(ps) != 1 || ps[0] != p2 {
		t.Fatalf("Release = %v", ps)
	}
	if _, _, err := r.Claim("s", b2, nil); err != nil {
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
	_, _, _ = r.Claim("A", bA, nil)
	_, _, _ = r.Claim("B", bB, nil)
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
	_, _, _ = release(r, "A", bA, false, nil)
	bA2 := &conn{"bA2"}
	_, _, _ = r.Claim("A", bA2, nil)
	idA2, _, _ := r.AddPhone("A", &conn{})
	if _, ok := r.Phone("A", bA, []byte(idA2)); ok {
		t.Fatal("released binary reached the new holder's phone")
	}
}

// Value types work as handles too, with the zero value meaning none.
func TestValueHandles(t *testing.T) {
	r := New[int, string](2)
	if _, _, err := r.Claim("s", 7, nil); err != nil {
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
	_, _, _ = r.Claim("srv-0123456789", b, nil)
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
				if _, _, err := r.Claim(sid, me, nil); err == nil {
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
					if _, _, err := r.Claim(sid, b, nil); err != nil {
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
					rel, _, _ := release(r, sid, b, false, nil)
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
		if ps, _, _ := release(r, sid, sharedBinaries[s].Load(), false, nil); len(ps) != maxPhones {
			t.Fatalf("Release %s returned %d phones", sid, len(ps))
		}
	}
	if r.Binaries() != 0 || r.Phones() != 0 {
		t.Fatalf("counts after teardown %d/%d", r.Binaries(), r.Phones())
	}
}

// withPhones claims serverID for b and attaches n phones, returning them in
// order with their conn_ids.
func withPhones(t *testing.T, r *reg, serverID string, b *conn, n int) (ps []*conn, ids []string) {
	t.Helper()
	if ev, h, err := r.Claim(serverID, b, nil); err != nil || h != nil || len(ev) != 0 {
		t.Fatalf("Claim(%s, %s) = %v, %v, %v", serverID, b.name, ev, h, err)
	}
	for i := 0; i < n; i++ {
		p := &conn{fmt.Sprintf("%s-p%d", b.name, i)}
		id, got, err := r.AddPhone(serverID, p)
		if err != nil || got != b {
			t.Fatalf("AddPhone(%s) = %v, %v", serverID, got, err)
		}
		ps, ids = append(ps, p), append(ids, id)
	}
	return ps, ids
}

// sameSet asserts got holds exactly want, in any order, each once.
func sameSet(t *testing.T, what string, got, want []*conn) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d (%v), want %d", what, len(got), got, len(want))
	}
	left := map[*conn]int{}
	for _, p := range want {
		left[p]++
	}
	for _, p := range got {
		if left[p] == 0 {
			t.Fatalf("%s: unexpected or repeated %v", what, p)
		}
		left[p]--
	}
}

func TestGraceHold(t *testing.T) {
	r := newReg(4)
	b1, other := &conn{"b1"}, &conn{"other"}
	ps, ids := withPhones(t, r, "s", b1, 3)
	withPhones(t, r, "t", other, 1)
	if r.Binaries() != 2 || r.Phones() != 4 {
		t.Fatalf("counts %d/%d, want 2/4", r.Binaries(), r.Phones())
	}

	sentinel := &conn{"already in dst"}
	dst, gen, held := release(r, "s", b1, true, []*conn{sentinel})
	if !held || gen == 0 || len(dst) != 1 || dst[0] != sentinel {
		t.Fatalf("Release(grace) = %v, %d, %v; want dst untouched, held", dst, gen, held)
	}
	// The slot stays with its phones; only the live-binary count drops.
	if b, live := r.Binary("s"); b != b1 || live {
		t.Fatalf("Binary during grace = %v, %v; want b1, false", b, live)
	}
	if r.Binaries() != 1 || r.Phones() != 4 {
		t.Fatalf("counts during grace %d/%d, want 1/4", r.Binaries(), r.Phones())
	}
	// The grace slot is not live: further releases and takeovers are no-ops.
	for _, grace := range []bool{false, true} {
		if got, g, h := release(r, "s", b1, grace, nil); len(got) != 0 || g != 0 || h {
			t.Fatalf("Release(grace=%v) during grace = %v, %d, %v", grace, got, g, h)
		}
	}
	if m, ok := r.Takeover("s", b1, moves{}); ok || m.Winner != nil || len(m.Evicted) != 0 {
		t.Fatalf("Takeover of a grace slot = %+v, %v", m, ok)
	}
	if b, live := r.Binary("s"); b != b1 || live || r.Binaries() != 1 || r.Phones() != 4 {
		t.Fatalf("no-ops changed the grace slot: %v %v %d/%d", b, live, r.Binaries(), r.Phones())
	}

	// Phones can still come and go, against the departed binary.
	p4 := &conn{"p4"}
	id4, got, err := r.AddPhone("s", p4)
	if err != nil || got != b1 {
		t.Fatalf("AddPhone during grace = %v, %v; want b1", got, err)
	}
	checkConnID(t, "s", id4)
	if _, _, err := r.AddPhone("s", &conn{}); !errors.Is(err, ErrPhonesAtCap) {
		t.Fatalf("AddPhone over the cap during grace: %v", err)
	}
	if got := r.RemovePhone("s", ids[0], ps[0]); got != b1 || r.Phones() != 4 {
		t.Fatalf("RemovePhone during grace = %v, phones %d", got, r.Phones())
	}
	if r.Binaries() != 1 {
		t.Fatalf("Binaries = %d", r.Binaries())
	}

	// The grace window's phones all come back when it expires.
	out, ok := r.Expire("s", b1, gen, nil)
	if !ok {
		t.Fatal("Expire of the current window failed")
	}
	sameSet(t, "Expire", out, []*conn{ps[1], ps[2], p4})
	if r.Binaries() != 1 || r.Phones() != 1 {
		t.Fatalf("counts after expire %d/%d, want 1/1", r.Binaries(), r.Phones())
	}
}

func TestGraceReclaim(t *testing.T) {
	r := newReg(16)
	b1, b2, b3 := &conn{"b1"}, &conn{"b2"}, &conn{"b3"}
	ps, ids := withPhones(t, r, "s", b1, 2)
	_, gen1, held := release(r, "s", b1, true, nil)
	if !held {
		t.Fatal("Release(grace) did not hold")
	}

	// A new binary reclaims at once; the departed binary's phones come
	// back appended for the caller to close.
	sentinel := &conn{"already in evicted"}
	ev, h, err := r.Claim("s", b2, []*conn{sentinel})
	if err != nil || h != b1 {
		t.Fatalf("reclaim = %v, %v; want b1 (whose grace window it was), nil", h, err)
	}
	if len(ev) == 0 || ev[0] != sentinel {
		t.Fatalf("reclaim dropped what was in evicted: %v", ev)
	}
	sameSet(t, "reclaim evicted", ev[1:], ps)
	if b, live := r.Binary("s"); b != b2 || !live {
		t.Fatalf("Binary after reclaim = %v, %v; want b2, true", b, live)
	}
	if r.Binaries() != 1 || r.Phones() != 0 {
		t.Fatalf("counts after reclaim %d/%d, want 1/0", r.Binaries(), r.Phones())
	}
	for _, id := range ids {
		for _, b := range []*conn{b1, b2} {
			if _, ok := r.Phone("s", b, []byte(id)); ok {
				t.Fatalf("evicted phone %s still reachable by %s", id, b.name)
			}
		}
	}
	// Live again: claims are refused, and the departed binary can do nothing.
	if _, h, err := r.Claim("s", b3, nil); !errors.Is(err, ErrClaimed) || h != b2 {
		t.Fatalf("claim over a reclaimed slot = %v, %v", h, err)
	}
	if got, _, held := release(r, "s", b1, true, nil); len(got) != 0 || held {
		t.Fatal("departed binary released the new holder")
	}
	if got, ok := r.Expire("s", b1, gen1, nil); ok || len(got) != 0 {
		t.Fatal("departed binary's timer expired the new holder")
	}
	pNew := &conn{"new"}
	id, got, err := r.AddPhone("s", pNew)
	if err != nil || got != b2 {
		t.Fatalf("AddPhone after reclaim = %v, %v", got, err)
	}
	if _, ok := r.Phone("s", b1, []byte(id)); ok {
		t.Fatal("departed binary reached the new holder's phone")
	}
	if r.Binaries() != 1 || r.Phones() != 1 {
		t.Fatalf("counts %d/%d, want 1/1", r.Binaries(), r.Phones())
	}

	// A reclaim of a grace slot with no phones evicts nothing.
	if _, _, held := release(r, "s", b2, true, nil); !held {
		t.Fatal("b2 Release(grace) did not hold")
	}
	if got := r.RemovePhone("s", id, pNew); got != b2 || r.Phones() != 0 {
		t.Fatalf("RemovePhone during grace = %v, phones %d", got, r.Phones())
	}
	ev, h, err = r.Claim("s", b3, nil)
	if err != nil || h != b2 || len(ev) != 0 {
		t.Fatalf("reclaim of an empty grace slot = %v, %v, %v", ev, h, err)
	}
	if r.Binaries() != 1 || r.Phones() != 0 {
		t.Fatalf("counts %d/%d, want 1/0", r.Binaries(), r.Phones())
	}
}

func TestExpire(t *testing.T) {
	r := newReg(16)
	b1, b2 := &conn{"b1"}, &conn{"b2"}

	// Nothing to expire: unknown id, and a live slot.
	if got, ok := r.Expire("s", b1, 0, nil); ok || len(got) != 0 {
		t.Fatal("Expire of an unknown id succeeded")
	}
	ps, ids := withPhones(t, r, "s", b1, 3)
	for _, g := range []uint64{0, 1, 2} {
		if got, ok := r.Expire("s", b1, g, nil); ok || len(got) != 0 {
			t.Fatalf("Expire(gen %d) of a live slot succeeded", g)
		}
	}
	_, gen, held := release(r, "s", b1, true, nil)
	if !held {
		t.Fatal("Release(grace) did not hold")
	}

	// The wrong binary or generation leaves the window alone.
	sentinel := &conn{"already in dst"}
	for _, c := range []struct {
		b   *conn
		gen uint64
	}{{b2, gen}, {nil, gen}, {b1, gen - 1}, {b1, gen + 1}, {b1, 0}} {
		got, ok := r.Expire("s", c.b, c.gen, []*conn{sentinel})
		if ok || len(got) != 1 || got[0] != sentinel {
			t.Fatalf("Expire(%v, %d) = %v, %v; want nothing", c.b, c.gen, got, ok)
		}
	}
	if b, live := r.Binary("s"); b != b1 || live || r.Phones() != 3 {
		t.Fatalf("refused Expire changed the slot: %v %v %d", b, live, r.Phones())
	}

	// The matching one ends it: phones appended, slot gone.
	got, ok := r.Expire("s", b1, gen, []*conn{sentinel})
	if !ok || len(got) == 0 || got[0] != sentinel {
		t.Fatalf("Expire = %v, %v", got, ok)
	}
	sameSet(t, "Expire", got[1:], ps)
	if b, live := r.Binary("s"); b != nil || live {
		t.Fatalf("Binary after expire = %v, %v", b, live)
	}
	if r.Binaries() != 0 || r.Phones() != 0 {
		t.Fatalf("counts after expire %d/%d", r.Binaries(), r.Phones())
	}
	if _, ok := r.Phone("s", b1, []byte(ids[0])); ok {
		t.Fatal("expired phone still reachable")
	}
	if _, _, err := r.AddPhone("s", &conn{}); !errors.Is(err, ErrNoServer) {
		t.Fatalf("AddPhone after expire: %v", err)
	}
	// Only once.
	if got, ok := r.Expire("s", b1, gen, nil); ok || len(got) != 0 {
		t.Fatal("second Expire succeeded")
	}
	// And the id is free again.
	if _, _, err := r.Claim("s", b2, nil); err != nil {
		t.Fatal(err)
	}
}

// A timer for a window that was since reclaimed is stale: it must never
// evict the newer holder, whether that holder is live or in its own grace
// window, and whether it is another binary or the same one come back.
func TestExpireStale(t *testing.T) {
	t.Run("other binary", func(t *testing.T) {
		r := newReg(16)
		b1, b2 := &conn{"b1"}, &conn{"b2"}
		withPhones(t, r, "s", b1, 1)
		_, gen1, _ := release(r, "s", b1, true, nil)
		if _, _, err := r.Claim("s", b2, nil); err != nil {
			t.Fatal(err)
		}
		p2 := &conn{"p2"}
		if _, _, err := r.AddPhone("s", p2); err != nil {
			t.Fatal(err)
		}
		check := func(wantLive bool) {
			t.Helper()
			for _, g := range []uint64{gen1, gen1 + 1, gen1 + 2} {
				if got, ok := r.Expire("s", b1, g, nil); ok || len(got) != 0 {
					t.Fatalf("stale Expire(b1, %d) evicted the new holder", g)
				}
			}
			if b, live := r.Binary("s"); b != b2 || live != wantLive || r.Phones() != 1 {
				t.Fatalf("new holder disturbed: %v %v phones %d", b, live, r.Phones())
			}
		}
		check(true)
		_, gen2, held := release(r, "s", b2, true, nil)
		if !held || gen2 == gen1 {
			t.Fatalf("b2 Release(grace) = %d, %v (gen1 %d)", gen2, held, gen1)
		}
		check(false)
		// b2's own old generation (its live period) is stale too.
		if _, ok := r.Expire("s", b2, gen1, nil); ok {
			t.Fatal("Expire with the pre-reclaim generation evicted b2")
		}
		if got, ok := r.Expire("s", b2, gen2, nil); !ok || len(got) != 1 || got[0] != p2 {
			t.Fatalf("Expire(b2, gen2) = %v, %v", got, ok)
		}
	})
	t.Run("same binary", func(t *testing.T) {
		r := newReg(16)
		b := &conn{"b"}
		ps, _ := withPhones(t, r, "s", b, 2)
		_, gen1, _ := release(r, "s", b, true, nil)
		ev, _, err := r.Claim("s", b, nil)
		if err != nil {
			t.Fatal(err)
		}
		sameSet(t, "self-reclaim evicted", ev, ps)
		if got, ok := r.Expire("s", b, gen1, nil); ok || len(got) != 0 {
			t.Fatal("stale Expire evicted the live holder")
		}
		p := &conn{"p"}
		if _, _, err := r.AddPhone("s", p); err != nil {
			t.Fatal(err)
		}
		_, gen2, held := release(r, "s", b, true, nil)
		if !held || gen2 == gen1 {
			t.Fatalf("second Release(grace) = %d, %v (gen1 %d)", gen2, held, gen1)
		}
		if got, ok := r.Expire("s", b, gen1, nil); ok || len(got) != 0 {
			t.Fatal("stale Expire ended the newer grace window")
		}
		if bb, live := r.Binary("s"); bb != b || live || r.Phones() != 1 {
			t.Fatalf("newer window disturbed: %v %v %d", bb, live, r.Phones())
		}
		if got, ok := r.Expire("s", b, gen2, nil); !ok || len(got) != 1 || got[0] != p {
			t.Fatalf("Expire(gen2) = %v, %v", got, ok)
		}
	})
	t.Run("after takeover", func(t *testing.T) {
		r := newReg(16)
		b1, b2 := &conn{"b1"}, &conn{"b2"}
		withPhones(t, r, "s", b1, 1)
		_, gen1, _ := release(r, "s", b1, true, nil)
		if _, _, err := r.Claim("s", b1, nil); err != nil { // back within grace
			t.Fatal(err)
		}
		takeover(t, r, "s", b1, b2, nil)
		_, gen2, _ := release(r, "s", b2, true, nil)
		for _, c := range []struct {
			b   *conn
			gen uint64
		}{{b1, gen1}, {b1, gen2}, {b2, gen1}} {
			if _, ok := r.Expire("s", c.b, c.gen, nil); ok {
				t.Fatalf("stale Expire(%s, %d) succeeded", c.b.name, c.gen)
			}
		}
		if b, live := r.Binary("s"); b != b2 || live {
			t.Fatalf("Binary = %v, %v", b, live)
		}
		if _, ok := r.Expire("s", b2, gen2, nil); !ok {
			t.Fatal("Expire(b2, gen2) failed")
		}
	})
}

func TestTakeover(t *testing.T) {
	r := newReg(16)
	b1, b2, b3 := &conn{"b1"}, &conn{"b2"}, &conn{"b3"}
	if m, ok := r.Takeover("s", nil, moves{}); ok || m.Winner != nil {
		t.Fatal("Takeover of an unknown id succeeded")
	}
	ps, ids := withPhones(t, r, "s", b1, 3)
	sentinel := &conn{"already in evicted"}

	// Nobody waits: nothing to take over.
	if m, ok := r.Takeover("s", b1, moves{}); ok || m.Winner != nil {
		t.Fatal("Takeover with nobody waiting succeeded")
	}
	if _, h, probe, err := r.ClaimOrWait("s", b2, nil); !errors.Is(err, ErrClaimed) || h != b1 || !probe {
		t.Fatalf("ClaimOrWait = %v, %v, %v; want queued behind b1, first", h, probe, err)
	}
	// Only the live holder can be taken over from.
	for _, old := range []*conn{b3, nil, b2} {
		m, ok := r.Takeover("s", old, moves{Evicted: []*conn{sentinel}})
		if ok || m.Winner != nil || len(m.Evicted) != 1 || m.Evicted[0] != sentinel {
			t.Fatalf("Takeover from %v = %+v, %v; want refused", old, m, ok)
		}
	}
	if b, live := r.Binary("s"); b != b1 || !live || r.Binaries() != 1 || r.Phones() != 3 {
		t.Fatalf("refused Takeover changed the slot: %v %v %d/%d", b, live, r.Binaries(), r.Phones())
	}

	m, ok := r.Takeover("s", b1, moves{Evicted: []*conn{sentinel}})
	if !ok || m.Winner != b2 || len(m.Refused) != 0 || len(m.Evicted) == 0 || m.Evicted[0] != sentinel {
		t.Fatalf("Takeover = %+v, %v", m, ok)
	}
	sameSet(t, "Takeover evicted", m.Evicted[1:], ps)
	if b, live := r.Binary("s"); b != b2 || !live {
		t.Fatalf("Binary after Takeover = %v, %v", b, live)
	}
	if r.Binaries() != 1 || r.Phones() != 0 {
		t.Fatalf("counts after Takeover %d/%d, want 1/0", r.Binaries(), r.Phones())
	}
	for _, id := range ids {
		if _, ok := r.Phone("s", b2, []byte(id)); ok {
			t.Fatal("old holder's phone reachable by the new one")
		}
	}
	// The old holder is out: no second takeover from it, and its release
	// (with or without grace) does nothing.
	if _, _, _, err := r.ClaimOrWait("s", b3, nil); !errors.Is(err, ErrClaimed) {
		t.Fatal(err)
	}
	if _, ok := r.Takeover("s", b1, moves{}); ok {
		t.Fatal("second Takeover from the old holder succeeded")
	}
	for _, grace := range []bool{false, true} {
		if m, _, held := r.Release("s", b1, grace, moves{}); m.Winner != nil || len(m.Evicted) != 0 || held {
			t.Fatalf("old holder's Release(grace=%v) acted: %+v %v", grace, m, held)
		}
	}
	if b, live := r.Binary("s"); b != b2 || !live || r.Binaries() != 1 {
		t.Fatal("old holder disturbed the new one")
	}
	// The new holder can be taken over in turn.
	p := &conn{"p"}
	if _, _, err := r.AddPhone("s", p); err != nil {
		t.Fatal(err)
	}
	if m, ok := r.Takeover("s", b2, moves{}); !ok || m.Winner != b3 || len(m.Evicted) != 1 || m.Evicted[0] != p {
		t.Fatalf("Takeover b2->b3 = %+v, %v", m, ok)
	}
	if got, _, held := release(r, "s", b3, false, nil); held || len(got) != 0 {
		t.Fatalf("Release b3 = %v, %v", got, held)
	}
	if r.Binaries() != 0 || r.Phones() != 0 {
		t.Fatalf("counts %d/%d", r.Binaries(), r.Phones())
	}
}

// Several claimants queue behind one holder: the first queued wins whatever
// decides (Takeover or the holder's Release), the rest are refused, and each
// is answered exactly once. A stale probe acting after the decision finds
// nothing: this was the `break // refuse everyone` branch in
// loop/takeover.go, which refused no one.
func TestWaitingDecidedOnce(t *testing.T) {
	for _, how := range []string{"takeover", "release", "release-nograce"} {
		t.Run(how, func(t *testing.T) {
			r := newReg(16)
			h, w1, w2, w3 := &conn{"h"}, &conn{"w1"}, &conn{"w2"}, &conn{"w3"}
			ps, _ := withPhones(t, r, "s", h, 2)
			for i, w := range []*conn{w1, w2, w3} {
				_, got, probe, err := r.ClaimOrWait("s", w, nil)
				if !errors.Is(err, ErrClaimed) || got != h || probe != (i == 0) {
					t.Fatalf("ClaimOrWait(%s) = %v, %v, %v", w.name, got, probe, err)
				}
			}
			var m moves
			switch how {
			case "takeover":
				var ok bool
				if m, ok = r.Takeover("s", h, moves{}); !ok {
					t.Fatal("Takeover failed")
				}
			default:
				var held bool
				if m, _, held = r.Release("s", h, how == "release", moves{}); held {
					t.Fatal("Release held the slot in grace while claimants waited")
				}
			}
			if m.Winner != w1 {
				t.Fatalf("winner %v, want w1 (first queued)", m.Winner)
			}
			sameSet(t, "refused", m.Refused, []*conn{w2, w3})
			sameSet(t, "evicted", m.Evicted, ps)
			if b, live := r.Binary("s"); b != w1 || !live || r.Binaries() != 1 || r.Phones() != 0 {
				t.Fatalf("slot %v %v, counts %d/%d", b, live, r.Binaries(), r.Phones())
			}
			// Every later decision about h finds nothing to decide.
			if m, ok := r.Takeover("s", h, moves{}); ok || m.Winner != nil || len(m.Refused) != 0 {
				t.Fatalf("stale Takeover = %+v, %v", m, ok)
			}
			if got := r.Keep("s", h, nil); len(got) != 0 {
				t.Fatalf("stale Keep = %v", got)
			}
			for _, w := range []*conn{w1, w2, w3} {
				if r.Withdraw("s", w) {
					t.Fatalf("Withdraw(%s) after the decision", w.name)
				}
			}
			if got := r.TakeWaiting(nil); len(got) != 0 {
				t.Fatalf("TakeWaiting = %v", got)
			}
		})
	}
}

// Keep refuses every claimant queued so far; one that queues after it starts
// a new probe (probe is true again).
func TestKeep(t *testing.T) {
	r := newReg(16)
	h, w1, w2, w3 := &conn{"h"}, &conn{"w1"}, &conn{"w2"}, &conn{"w3"}
	withPhones(t, r, "s", h, 1)
	if got := r.Keep("s", h, nil); len(got) != 0 {
		t.Fatalf("Keep with nobody waiting = %v", got)
	}
	r.ClaimOrWait("s", w1, nil)
	r.ClaimOrWait("s", w2, nil)
	if got := r.Keep("s", w1, nil); len(got) != 0 {
		t.Fatalf("Keep by a non-holder = %v", got)
	}
	sentinel := &conn{"already refused"}
	got := r.Keep("s", h, []*conn{sentinel})
	if len(got) != 3 || got[0] != sentinel || got[1] != w1 || got[2] != w2 {
		t.Fatalf("Keep = %v", got)
	}
	if _, _, probe, _ := r.ClaimOrWait("s", w3, nil); !probe {
		t.Fatal("the first claimant after Keep did not start a probe")
	}
	if b, live := r.Binary("s"); b != h || !live || r.Phones() != 1 {
		t.Fatal("Keep changed the slot")
	}
}

// A claimant that leaves while queued is never handed the slot: once
// Withdraw has taken it out, a takeover or the holder's departure skips it,
// so a dead connection cannot end up holding the server-id (item 8 of the
// takeover fixes: the newcomer that closed between loop/takeover.go's
// liveness check and its Takeover call).
func TestWithdraw(t *testing.T) {
	t.Run("takeover skips it", func(t *testing.T) {
		r := newReg(16)
		h, w1, w2 := &conn{"h"}, &conn{"w1"}, &conn{"w2"}
		withPhones(t, r, "s", h, 1)
		r.ClaimOrWait("s", w1, nil)
		r.ClaimOrWait("s", w2, nil)
		if r.Withdraw("s", h) || r.Withdraw("t", w1) {
			t.Fatal("Withdraw of someone not queued succeeded")
		}
		if !r.Withdraw("s", w1) || r.Withdraw("s", w1) {
			t.Fatal("Withdraw(w1) not exactly once")
		}
		m, ok := r.Takeover("s", h, moves{})
		if !ok || m.Winner != w2 || len(m.Refused) != 0 {
			t.Fatalf("Takeover = %+v, %v; want w2", m, ok)
		}
	})
	t.Run("last one out: holder kept, release holds grace", func(t *testing.T) {
		r := newReg(16)
		h, w := &conn{"h"}, &conn{"w"}
		withPhones(t, r, "s", h, 1)
		r.ClaimOrWait("s", w, nil)
		if !r.Withdraw("s", w) {
			t.Fatal("Withdraw failed")
		}
		if _, ok := r.Takeover("s", h, moves{}); ok {
			t.Fatal("Takeover with nobody left waiting succeeded")
		}
		if _, _, held := r.Release("s", h, true, moves{}); !held {
			t.Fatal("holder's Release did not hold grace")
		}
		// The next claimant reclaims at once instead of waiting.
		w2 := &conn{"w2"}
		if ev, got, probe, err := r.ClaimOrWait("s", w2, nil); err != nil || got != h || probe || len(ev) != 1 {
			t.Fatalf("reclaim = %v, %v, %v, %v", ev, got, probe, err)
		}
	})
	t.Run("won, then leaves", func(t *testing.T) {
		// The winner was already leaving when it got the slot: its own
		// Release (it is the holder now) puts the slot into grace, and the
		// server-id stays claimable.
		r := newReg(16)
		h, w := &conn{"h"}, &conn{"w"}
		withPhones(t, r, "s", h, 1)
		takeover(t, r, "s", h, w, nil)
		if r.Withdraw("s", w) {
			t.Fatal("Withdraw of the winner succeeded")
		}
		if _, _, held := r.Release("s", w, true, moves{}); !held {
			t.Fatal("winner's Release did not hold grace")
		}
		w2 := &conn{"w2"}
		if _, got, _, err := r.ClaimOrWait("s", w2, nil); err != nil || got != w {
			t.Fatalf("claim after the winner left = %v, %v", got, err)
		}
	})
}

// The holder leaves before a claimant queues: the claimant finds the grace
// slot and reclaims it, never waiting on a holder that is gone. It leaves
// after: its Release hands the claimant the slot. There is no third order
// (the probe loop/takeover.go started on a holder already gone, never
// resolved).
func TestClaimOrWaitVersusRelease(t *testing.T) {
	r := newReg(16)
	h, w := &conn{"h"}, &conn{"w"}
	withPhones(t, r, "s", h, 1)
	if _, _, held := r.Release("s", h, true, moves{}); !held {
		t.Fatal("no grace")
	}
	if _, got, probe, err := r.ClaimOrWait("s", w, nil); err != nil || got != h || probe {
		t.Fatalf("ClaimOrWait after the holder left = %v, %v, %v", got, probe, err)
	}
	if got := r.TakeWaiting(nil); len(got) != 0 {
		t.Fatalf("a claimant waits: %v", got)
	}
}

func TestTakeWaiting(t *testing.T) {
	r := newReg(16)
	var want []*conn
	sidOf := map[*conn]string{}
	for i := 0; i < 100; i++ { // spread over the shards
		sid := fmt.Sprint("srv-", i)
		withPhones(t, r, sid, &conn{fmt.Sprint("h", i)}, 0)
		for k := 0; k < i%3; k++ {
			w := &conn{fmt.Sprint("w", i, "-", k)}
			r.ClaimOrWait(sid, w, nil)
			want, sidOf[w] = append(want, w), sid
		}
	}
	sentinel := &conn{"sentinel"}
	got := r.TakeWaiting([]*conn{sentinel})
	if got[0] != sentinel {
		t.Fatal("TakeWaiting dropped what was in dst")
	}
	sameSet(t, "TakeWaiting", got[1:], want)
	for _, w := range want {
		if r.Withdraw(sidOf[w], w) {
			t.Fatal("still queued after TakeWaiting")
		}
	}
	if got := r.TakeWaiting(nil); len(got) != 0 {
		t.Fatalf("second TakeWaiting = %v", got)
	}
	if r.Binaries() != 100 {
		t.Fatalf("Binaries = %d", r.Binaries())
	}
}

func TestEach(t *testing.T) {
	r := newReg(16)
	sb, sp := &conn{"sentinel binary"}, &conn{"sentinel phone"}
	bins, phones := r.Each([]*conn{sb}, []*conn{sp})
	if len(bins) != 1 || bins[0] != sb || len(phones) != 1 || phones[0] != sp {
		t.Fatalf("Each on an empty registry = %v, %v", bins, phones)
	}

	var wantB, wantP []*conn
	for i := 0; i < 200; i++ { // spread over the shards
		b := &conn{fmt.Sprint("b", i)}
		ps, _ := withPhones(t, r, fmt.Sprint("srv-", i), b, i%4)
		wantB, wantP = append(wantB, b), append(wantP, ps...)
		if i%3 == 0 { // some in their grace window
			if _, _, held := release(r, fmt.Sprint("srv-", i), b, true, nil); !held {
				t.Fatal("Release(grace) did not hold")
			}
		}
	}
	bins, phones = r.Each([]*conn{sb}, []*conn{sp})
	if bins[0] != sb || phones[0] != sp {
		t.Fatal("Each dropped what was already there")
	}
	sameSet(t, "Each binaries", bins[1:], wantB)
	sameSet(t, "Each phones", phones[1:], wantP)
	if r.Phones() != len(wantP) || r.Binaries() != 200-67 {
		t.Fatalf("counts %d/%d, want %d/%d", r.Binaries(), r.Phones(), 200-67, len(wantP))
	}
}

// Many goroutines fight over a few server-ids, each claiming with a fresh
// binary, then alternating Release(grace) and reclaim by the same binary,
// publishing every grace window's (binary, generation) as a timer that any
// goroutine may fire later, stale or not. Run with -race. Invariants: a live
// holder is never disturbed (Binary, AddPhone and its Release see it); a
// binary's superseded generations never expire anything; an Expire that
// succeeds returns only its binary's phones; every phone comes back exactly
// once; the counts agree at the end.
func TestGraceRace(t *testing.T) {
	const (
		workers = 12
		ids     = 3
		rounds  = 300
		poolCap = 32
	)
	r := newReg(1 << 10)
	type timer struct {
		b   *conn
		gen uint64
	}
	var pools [ids]struct {
		mu sync.Mutex
		ts []timer
	}
	publish := func(s int, tm timer) {
		p := &pools[s]
		p.mu.Lock()
		if len(p.ts) < poolCap {
			p.ts = append(p.ts, tm)
		} else {
			p.ts[int(tm.gen)%poolCap] = tm
		}
		p.mu.Unlock()
	}
	pick := func(s, k int) (timer, bool) {
		p := &pools[s]
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.ts) == 0 {
			return timer{}, false
		}
		return p.ts[k%len(p.ts)], true
	}

	var failed atomic.Value
	fail := func(format string, args ...any) { failed.CompareAndSwap(nil, fmt.Sprintf(format, args...)) }
	var created, returned, expired, reclaimed atomic.Int64
	var seen sync.Map // phone -> struct{}: each comes back once
	account := func(what string, ps []*conn, owner *conn) {
		for _, p := range ps {
			if owner != nil && p.name != owner.name {
				fail("%s returned %s's phone, want %s's", what, p.name, owner.name)
			}
			if _, dup := seen.LoadOrStore(p, struct{}{}); dup {
				fail("%s returned phone %p (%s) a second time", what, p, p.name)
			}
		}
		returned.Add(int64(len(ps)))
	}
	sidOf := func(s int) string { return fmt.Sprint("race-", s) }
	fire := func(s, k int) {
		tm, ok := pick(s, k)
		if !ok {
			return
		}
		if ps, ok := r.Expire(sidOf(s), tm.b, tm.gen, nil); ok {
			expired.Add(1)
			account("pooled Expire", ps, tm.b)
		}
	}

	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			<-start
			k := w * 7919 // cheap deterministic spread, no shared rand
			next := func() int { k = k*1103515245 + 12345; return (k >> 8) & 0x7fffffff }
			attach := func(s int, b *conn, n int) bool {
				for i := 0; i < n; i++ {
					p := &conn{b.name}
					created.Add(1)
					if _, got, err := r.AddPhone(sidOf(s), p); err != nil || got != b {
						fail("AddPhone by live holder %s: %v, %v", b.name, got, err)
						return false
					}
				}
				return true
			}
			for round := 0; round < rounds && failed.Load() == nil; round++ {
				s := next() % ids
				sid := sidOf(s)
				b := &conn{fmt.Sprintf("w%d-r%d", w, round)}
				ev, h, err := r.Claim(sid, b, nil)
				account("Claim evicted", ev, nil)
				for _, p := range ev {
					if p.name == b.name {
						fail("fresh binary %s got its own phones back", b.name)
					}
				}
				if err != nil {
					if !errors.Is(err, ErrClaimed) || h == nil || h == b {
						fail("Claim %s: %v, %v", sid, h, err)
					}
					fire(s, next())
					continue
				}
				if !attach(s, b, 1+next()%3) {
					return
				}
				var gens []uint64
				live := true
				for cycle := 0; cycle < 1+next()%3; cycle++ {
					// Whatever fires meanwhile, a live holder stays put.
					fire(s, next())
					fire(s, next())
					if got, l := r.Binary(sid); got != b || !l {
						fail("live holder %s displaced: Binary = %v, %v", b.name, got, l)
						return
					}
					dst, g, held := release(r, sid, b, true, nil)
					if !held || len(dst) != 0 {
						fail("live holder %s: Release(grace) = %v, %d, %v", b.name, dst, g, held)
						return
					}
					if len(gens) > 0 && g <= gens[len(gens)-1] {
						fail("%s: generation %d after %d", b.name, g, gens[len(gens)-1])
					}
					gens = append(gens, g)
					live = false
					publish(s, timer{b, g})
					// Superseded generations of b never expire anything.
					for _, old := range gens[:len(gens)-1] {
						if ps, ok := r.Expire(sid, b, old, nil); ok {
							account("stale Expire", ps, b)
							fail("stale Expire(%s, %d) succeeded (latest %d)", b.name, old, g)
						}
					}
					fire(s, next())
					// Come back within grace, if nobody beat us to it.
					ev, h, err := r.Claim(sid, b, nil)
					if err != nil {
						if !errors.Is(err, ErrClaimed) || h == b {
							fail("self-reclaim %s: %v, %v", b.name, h, err)
						}
						break // lost the slot
					}
					genuine := len(ev) > 0
					for _, p := range ev {
						genuine = genuine && p.name == b.name
					}
					account("self-reclaim evicted", ev, nil)
					live = true
					if !genuine {
						// Our window was expired or reclaimed and we got the
						// id afresh: never let this handle into grace again,
						// as real connections never come back either.
						ps, _, held := release(r, sid, b, false, nil)
						account("Release", ps, b)
						if held {
							fail("Release without grace held")
						}
						live = false
						break
					}
					reclaimed.Add(1)
					if !attach(s, b, 1+next()%2) {
						return
					}
				}
				if live {
					_, g, held := release(r, sid, b, true, nil)
					if !held {
						fail("live holder %s: final Release(grace) did not hold", b.name)
						return
					}
					gens = append(gens, g)
					publish(s, timer{b, g})
					if next()%2 == 0 {
						if ps, ok := r.Expire(sid, b, g, nil); ok {
							expired.Add(1)
							account("own Expire", ps, b)
						}
					}
				}
				for _, old := range gens[:len(gens)-1] {
					if ps, ok := r.Expire(sid, b, old, nil); ok {
						account("stale Expire", ps, b)
						fail("stale Expire(%s, %d) succeeded at the end", b.name, old)
					}
				}
			}
		}(w)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	close(start)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("grace race did not finish in 60s")
	}
	if msg := failed.Load(); msg != nil {
		t.Fatal(msg)
	}
	t.Logf("%d phones, %d expiries, %d self-reclaims", created.Load(), expired.Load(), reclaimed.Load())
	if expired.Load() == 0 || reclaimed.Load() == 0 {
		t.Fatalf("race too tame: %d expiries, %d self-reclaims", expired.Load(), reclaimed.Load())
	}
	// Every worker ended with a release: nothing live is left, and every
	// phone is either returned once or still in a grace slot.
	if r.Binaries() != 0 {
		t.Fatalf("Binaries = %d after every holder released", r.Binaries())
	}
	bins, left := r.Each(nil, nil)
	if len(bins) > ids {
		t.Fatalf("Each returned %d binaries for %d ids", len(bins), ids)
	}
	if len(left) != r.Phones() || returned.Load()+int64(len(left)) != created.Load() {
		t.Fatalf("phones: created %d, returned %d, left %d (Phones %d)",
			created.Load(), returned.Load(), len(left), r.Phones())
	}
	account("Each", left, nil)
	for _, b := range bins {
		found := false
		for s := 0; s < ids && !found; s++ {
			if got, l := r.Binary(sidOf(s)); got == b {
				found = true
				if l {
					t.Fatalf("%s still live", b.name)
				}
			}
		}
		if !found {
			t.Fatalf("Each returned %s, held nowhere", b.name)
		}
	}
	if msg := failed.Load(); msg != nil {
		t.Fatal(msg)
	}
}

// Claimants queue, withdraw and win while other goroutines decide for
// whoever holds the slot right now (Keep, Takeover, the holder's Release)
// and shutdown's TakeWaiting runs alongside. Run with -race. Invariants:
// every claimant is answered exactly once (claimed at once, won, refused,
// withdrawn, or taken by TakeWaiting), a withdrawn claimant never holds the
// slot, and no slot is left with a queue while it is not live.
func TestWaitingRace(t *testing.T) {
	const (
		workers = 8
		rounds  = 2000
		ids     = 2
	)
	r := newReg(16)
	type claimant struct {
		conn
		answers   atomic.Int32
		withdrawn atomic.Bool
	}
	var mu sync.Mutex
	all := map[*conn]*claimant{}
	var failed atomic.Pointer[string]
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		failed.CompareAndSwap(nil, &msg)
	}
	lookup := func(b *conn) *claimant {
		mu.Lock()
		defer mu.Unlock()
		return all[b]
	}
	answer := func(bs ...*conn) {
		for _, b := range bs {
			if n := lookup(b).answers.Add(1); n != 1 {
				fail("%s answered %d times", b.name, n)
			}
		}
	}
	decide := func(m moves) {
		if m.Winner != nil {
			if lookup(m.Winner).withdrawn.Load() {
				fail("withdrawn %s won the slot", m.Winner.name)
			}
			answer(m.Winner)
		}
		answer(m.Refused...)
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds && failed.Load() == nil; i++ {
				sid := fmt.Sprint("s", i%ids)
				c := &claimant{conn: conn{fmt.Sprintf("w%d-%d", w, i)}}
				mu.Lock()
				all[&c.conn] = c
				mu.Unlock()
				if _, h, _, err := r.ClaimOrWait(sid, &c.conn, nil); err == nil {
					answer(&c.conn)
				} else if h == nil {
					fail("ErrClaimed without a holder")
				} else if i%3 == 0 && r.Withdraw(sid, &c.conn) {
					c.withdrawn.Store(true)
					answer(&c.conn)
				}
				cur, live := r.Binary(sid)
				if !live {
					continue
				}
				switch i % 7 {
				case 0, 1:
					answer(r.Keep(sid, cur, nil)...)
				case 2, 3:
					m, _ := r.Takeover(sid, cur, moves{})
					decide(m)
				case 4:
					m, _, _ := r.Release(sid, cur, i%2 == 0, moves{})
					decide(m)
				case 5:
					if i%50 == 0 {
						answer(r.TakeWaiting(nil)...)
					}
				}
			}
		}()
	}
	wg.Wait()
	if msg := failed.Load(); msg != nil {
		t.Fatal(*msg)
	}
	answer(r.TakeWaiting(nil)...)
	for i := range r.shards {
		for sid, sl := range r.shards[i].slots {
			if !sl.live && len(sl.waiting) != 0 {
				t.Fatalf("%s: %d waiting on a slot in grace", sid, len(sl.waiting))
			}
			if sl.live && all[sl.binary].withdrawn.Load() {
				t.Fatalf("%s held by withdrawn %s", sid, sl.binary.name)
			}
		}
	}
	if msg := failed.Load(); msg != nil {
		t.Fatal(*msg)
	}
	for b, c := range all {
		if n := c.answers.Load(); n != 1 {
			t.Fatalf("%s answered %d times", b.name, n)
		}
	}
	t.Logf("%d claimants", len(all))
}
