package wheel

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A firing is one OnTimer call: the now it was given and when it ran.
type firing struct {
	now  int64
	wall time.Time
}

// entry is a fake Entry that reports each fire on fires and then runs
// then, which may book it again, as a connection's onTimer does.
type entry struct {
	at    atomic.Int64
	fires chan firing
	then  func(now int64)
}

func newEntry() *entry { return &entry{fires: make(chan firing, 16)} }

func (e *entry) TimerAt() *atomic.Int64 { return &e.at }

func (e *entry) OnTimer(now int64) {
	e.fires <- firing{now, time.Now()}
	if e.then != nil {
		e.then(now)
	}
}

// rig is a wheel under test. Lateness within lateSlack is not a failure:
// a loaded machine (two cores, -race, other tests) delays the wheel's
// goroutine; the worst is logged once. Firing early is never allowed.
type rig struct {
	*Wheel[*entry]
	t     *testing.T
	mu    sync.Mutex
	worst time.Duration
}

const lateSlack = 2 * time.Second

// newRig makes a wheel of resolution tick; run starts it. Bookings made
// before run are exact: nothing can fire in between.
func newRig(t *testing.T, tick time.Duration) *rig {
	r := &rig{Wheel: New[*entry](tick), t: t}
	t.Cleanup(func() {
		if r.worst > 0 {
			t.Logf("latest fire: %v past its tick of %v", r.worst, tick)
		}
	})
	return r
}

// run starts the wheel's goroutine and stops it when the test ends.
func (r *rig) run() *rig {
	go r.Run()
	r.t.Cleanup(r.Close)
	return r
}

// waitFire waits for e's next fire, at most 10 s.
func waitFire(t *testing.T, e *entry, what string) firing {
	t.Helper()
	select {
	case f := <-e.fires:
		return f
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s to fire", what)
		return firing{}
	}
}

// check asserts that f, a fire of an entry booked for at, came no earlier
// than a tick before at, with now at least at, and no later than a tick
// after at, give or take lateSlack.
func (r *rig) check(f firing, at int64, what string) {
	r.t.Helper()
	tick := int64(r.tick)
	ran := r.At(f.wall)
	if ran < at-tick {
		r.t.Fatalf("%s fired %v early (more than the %v tick)", what, time.Duration(at-ran), r.tick)
	}
	if f.now < at {
		r.t.Fatalf("%s: OnTimer's now is %v before the booking", what, time.Duration(at-f.now))
	}
	late := time.Duration(ran - at - tick)
	if late > lateSlack {
		r.t.Fatalf("%s fired %v late (past a %v tick)", what, late, r.tick)
	}
	r.mu.Lock()
	r.worst = max(r.worst, late)
	r.mu.Unlock()
}

// noFire asserts that e has not fired again. Slots fire in order on one
// goroutine, so once an entry booked later than any slot in question has
// fired (sentinel), those slots are done.
func noFire(t *testing.T, e *entry, what string) {
	t.Helper()
	select {
	case f := <-e.fires:
		t.Fatalf("%s fired again (now %d)", what, f.now)
	default:
	}
}

// sentinel books a fresh entry at and waits for it, and so for every slot
// before at's to have fired.
func (r *rig) sentinel(at int64) {
	r.t.Helper()
	s := newEntry()
	r.Book(s, at)
	waitFire(r.t, s, "the sentinel")
}

func TestFiresWithinATickOfItsTime(t *testing.T) {
	t.Parallel()
	const tick = 2 * time.Millisecond
	w := newRig(t, tick).run()
	offsets := []time.Duration{-tick, 0, tick / 2, tick, 3 * tick, 10 * tick, 25 * tick, 60 * tick}
	es := make([]*entry, len(offsets))
	ats := make([]int64, len(offsets))
	for i, d := range offsets {
		es[i], ats[i] = newEntry(), w.At(time.Now().Add(d))
		w.Book(es[i], ats[i])
	}
	for i := range es {
		w.check(waitFire(t, es[i], offsets[i].String()), ats[i], offsets[i].String())
		if got := es[i].at.Load(); got != 0 {
			t.Fatalf("%v: booking %d left after the fire", offsets[i], got)
		}
	}
	w.sentinel(ats[len(ats)-1] + 5*int64(tick))
	for i, e := range es {
		noFire(t, e, offsets[i].String())
	}
}

// Booking earlier moves the entry; the entry left in the later slot is
// stale and fires nothing, whether the entry is unbooked by then or booked
// for another time.
func TestRebookEarlierMovesTheEntry(t *testing.T) {
	t.Parallel()
	const tick = 2 * time.Millisecond
	w := newRig(t, tick)
	base := w.At(time.Now())
	late, early, again := base+int64(50*tick), base+int64(5*tick), base+int64(80*tick)

	idle, rebooked := newEntry(), newEntry()
	once := sync.Once{}
	rebooked.then = func(int64) { once.Do(func() { w.Book(rebooked, again) }) }
	for _, e := range []*entry{idle, rebooked} {
		w.Book(e, late)
		w.Book(e, early)
		if got := e.at.Load(); got != early {
			t.Fatalf("booking is %d after booking earlier, want %d", got, early)
		}
	}
	w.run()
	w.check(waitFire(t, idle, "the moved entry"), early, "the moved entry")
	w.check(waitFire(t, rebooked, "the moved entry"), early, "the moved entry")
	// Its second fire is the new booking's, not the stale entry's at late.
	w.check(waitFire(t, rebooked, "the rebooked entry"), again, "the rebooked entry")
	w.sentinel(again + int64(5*tick))
	noFire(t, idle, "the stale entry (unbooked)")
	noFire(t, rebooked, "the stale entry (booked again)")
}

// Booking later than the live booking changes nothing: the earlier one
// fires, and only an OnTimer that books again gets the later time.
func TestRebookLaterWaitsForTheEarlier(t *testing.T) {
	t.Parallel()
	const tick = 2 * time.Millisecond
	w := newRig(t, tick)
	base := w.At(time.Now())
	early, late := base+int64(20*tick), base+int64(60*tick)

	dropped, kept := newEntry(), newEntry()
	once := sync.Once{}
	kept.then = func(int64) { once.Do(func() { w.Book(kept, late) }) }
	for _, e := range []*entry{dropped, kept} {
		w.Book(e, early)
		w.Book(e, late)
		if got := e.at.Load(); got != early {
			t.Fatalf("booking is %d after booking later, want %d", got, early)
		}
	}
	w.run()
	w.check(waitFire(t, dropped, "the earlier booking"), early, "the earlier booking")
	w.check(waitFire(t, kept, "the earlier booking"), early, "the earlier booking")
	w.check(waitFire(t, kept, "the later booking"), late, "the later booking, made by OnTimer")
	w.sentinel(late + int64(5*tick))
	noFire(t, dropped, "the entry whose later booking was not made again")
	noFire(t, kept, "the rebooked entry")
}

// A booking beyond the horizon (numSlots ticks) lands in a slot that comes
// up a rotation early: it must be kept for the next rotation, not fired.
func TestWrapsAroundTheHorizon(t *testing.T) {
	t.Parallel()
	const tick = 250 * time.Microsecond // so a rotation takes about 1 s
	w := newRig(t, tick).run()
	base := w.At(time.Now())
	horizon := int64(numSlots * tick)
	ats := []int64{base + horizon + int64(20*tick), base + horizon + int64(numSlots/2*tick)}
	es := []*entry{newEntry(), newEntry()}
	near := newEntry() // in the same slot as the first, a rotation earlier
	for i, e := range es {
		w.Book(e, ats[i])
	}
	w.Book(near, ats[0]-horizon)
	w.check(waitFire(t, near, "the entry within the horizon"), ats[0]-horizon, "the entry within the horizon")
	for i, e := range es {
		w.check(waitFire(t, e, "the wrapped entry"), ats[i], "the wrapped entry")
	}
	w.sentinel(ats[1] + int64(5*tick))
	noFire(t, near, "the entry within the horizon")
	for _, e := range es {
		noFire(t, e, "the wrapped entry")
	}
}

// Entries booked from many goroutines at once each fire exactly once.
func TestConcurrentBookingsFireOnce(t *testing.T) {
	t.Parallel()
	const tick = time.Millisecond
	w := newRig(t, tick).run()
	const goroutines, each = 8, 50
	es := make([]*entry, goroutines*each)
	ats := make([]int64, len(es))
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g * each; i < (g+1)*each; i++ {
				es[i] = newEntry()
				ats[i] = w.At(time.Now().Add(time.Duration(i%30) * tick))
				w.Book(es[i], ats[i]+int64(10*tick)) // then moved earlier
				w.Book(es[i], ats[i])
			}
		}()
	}
	wg.Wait()
	last := int64(0)
	for i, e := range es {
		w.check(waitFire(t, e, "an entry"), ats[i], "an entry")
		last = max(last, ats[i])
	}
	w.sentinel(last + int64(15*tick))
	for _, e := range es {
		noFire(t, e, "an entry")
	}
}

func TestCloseStopsRun(t *testing.T) {
	t.Parallel()
	w := New[*entry](time.Millisecond)
	ran := make(chan struct{})
	go func() { w.Run(); close(ran) }()
	e := newEntry()
	w.Book(e, w.At(time.Now()))
	waitFire(t, e, "an entry before Close")
	w.Close()
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}

// Booking and firing reuse the slots' slices and the scratch batch: once
// every slot has had an entry, a tick's work allocates nothing.
func TestSteadyStateDoesNotAllocate(t *testing.T) {
	w := New[*entry](time.Millisecond) // driven by hand, not by Run
	e := newEntry()
	var batch []*entry
	now := time.Now()
	step := func() {
		now = now.Add(w.tick)
		at := w.At(now)
		w.Book(e, at)
		batch = w.fire(at/int64(w.tick), now, batch)
		<-e.fires
	}
	for range 2 * numSlots {
		step()
	}
	if a := testing.AllocsPerRun(1000, step); a != 0 {
		t.Fatalf("%v allocations per booked and fired tick", a)
	}
}

func TestAtIsNeverZero(t *testing.T) {
	w := New[*entry](time.Millisecond)
	if got := w.At(time.Now().Add(-time.Hour)); got != 1 {
		t.Fatalf("At(an hour before the origin) = %d, want 1", got)
	}
	if got := w.At(w.origin.Add(time.Second)); got != int64(time.Second) {
		t.Fatalf("At(origin+1s) = %d", got)
	}
}

func TestTick(t *testing.T) {
	cases := []struct {
		ds   []time.Duration
		want time.Duration
	}{
		{nil, 100 * time.Millisecond},
		{[]time.Duration{0, -time.Second}, 100 * time.Millisecond},
		{[]time.Duration{30 * time.Second, 5 * time.Second}, 100 * time.Millisecond},
		{[]time.Duration{30 * time.Second, 300 * time.Millisecond}, 30 * time.Millisecond},
		{[]time.Duration{20 * time.Millisecond}, 5 * time.Millisecond},
		{[]time.Duration{time.Nanosecond}, 5 * time.Millisecond},
	}
	for _, tc := range cases {
		if got := Tick(tc.ds...); got != tc.want {
			t.Fatalf("Tick(%v) = %v, want %v", tc.ds, got, tc.want)
		}
	}
}
