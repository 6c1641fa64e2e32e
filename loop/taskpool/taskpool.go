// Package taskpool runs the relay's netpoll read tasks on a few
// long-lived workers fed by a bounded queue; each Server has one Pool.
//
// Why not a goroutine per read event: a fresh goroutine starts on a 2 KiB
// stack and a phone's read task (netpoll → consume → frame → Valid) needs a
// little more, so every event paid for a goroutine start, a stack copy to
// 4 KiB and an exit: ~18% of the relay's CPU at one message in flight per
// phone (runtime.newstack/copystack 12%, newproc and goexit 6%). A worker
// keeps its grown stack and takes the next task without parking while the
// queue has one.
//
// Why a few workers are enough: a read task never blocks. It parses,
// routes and pushes to outboxes; the socket writes, the only thing that
// waits on a peer, happen on the outboxes' own writers. So GOMAXPROCS
// workers keep every core busy.
//
// But a task can run long: netpoll keeps a connection's task going for as
// long as input keeps arriving, so a peer that sends without pause holds a
// worker for as long as it keeps sending. Two bounds keep such peers from
// starving everyone else:
//   - the queue: when it is full the task runs on a goroutine of its own
//     (Spilled), so the poller never blocks;
//   - the stall: when tasks are waiting, no worker is idle and none has
//     taken a task for stallAfter, a watchdog starts a rescuer goroutine
//     that serves the queue until it is empty (Rescues). Under such a flood
//     the relay falls back to a goroutine per task, which the Go scheduler
//     time-slices fairly. The watchdog is a timer armed only while tasks
//     wait in the queue (a task handed straight to an idle worker does not
//     arm it), so an idle or lightly loaded relay never wakes for it.
package taskpool

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Pool is one Server's read workers and their queues. Its methods are safe
// for concurrent use.
type Pool struct {
	queue chan func()
	// later holds the turns of paused connections (RunLater), which are
	// the ones that sent the most: workers take them only when queue is
	// empty, or one in laterEvery, so a light connection's task never waits
	// behind a flood, and the tasks of connections not yet paused start
	// soon enough for netpoll to read little ahead of them.
	later      chan func()
	stallAfter int64 // nanoseconds
	now        func() int64

	idle     atomic.Int32 // workers waiting for a task
	lastTake atomic.Int64 // when a worker or rescuer last took a task (now())
	spilled  atomic.Uint64
	rescues  atomic.Uint64
	watchdog *time.Timer // runs watch; armed while tasks wait in the queue
	armed    atomic.Bool

	// Stop closes queue once no Run or RunLater call can still be sending to it:
	// send announces itself in sending before it looks at stopped.
	sending atomic.Int32
	stopped atomic.Bool
	workers sync.WaitGroup
}

// New starts workers workers, with room for depth tasks in each queue, and
// a watchdog that rescues the queue once no worker has taken a task for
// stallAfter while tasks wait.
func New(workers, depth int, stallAfter time.Duration) *Pool {
	return newClock(workers, depth, stallAfter, func() int64 { return time.Now().UnixNano() })
}

// newClock is New on the clock now (tests step it).
func newClock(workers, depth int, stallAfter time.Duration, now func() int64) *Pool {
	t := &Pool{
		queue:      make(chan func(), depth),
		later:      make(chan func(), depth),
		stallAfter: int64(stallAfter),
		now:        now,
	}
	t.lastTake.Store(t.now())
	t.watchdog = time.AfterFunc(time.Hour, t.watch)
	t.watchdog.Stop()
	t.workers.Add(workers)
	for range workers {
		go t.work()
	}
	return t
}

func (t *Pool) work() {
	defer t.workers.Done()
	for n := 0; ; n++ {
		var task func()
		ok := true
		if n%laterEvery != 0 {
			select {
			case task, ok = <-t.queue:
			default:
			}
		}
		later := false
		if task == nil && ok {
			t.idle.Add(1)
			select {
			case task, ok = <-t.queue:
			case task, ok = <-t.later:
				later = true
			}
			t.idle.Add(-1)
		}
		if !ok {
			t.finish()
			return
		}
		t.lastTake.Store(t.now())
		task()
		if later {
			// A flood's turn: let the goroutines it made runnable (the
			// writers of the frames it queued, other connections' writers)
			// have the processor now rather than at the scheduler's next
			// preemption, up to 10 ms away while turns keep coming.
			runtime.Gosched()
		}
	}
}

// finish runs what is left in both queues once Stop has closed them: a
// worker sees one closed while the other may still hold tasks (the close
// requests the relay's shutdown queues for paused connections among them).
func (t *Pool) finish() {
	for task := range t.queue {
		task()
	}
	for task := range t.later {
		task()
	}
}

// laterEvery bounds how long paused connections' turns can wait while
// light tasks keep every worker busy: one task in laterEvery may be theirs.
const laterEvery = 8

// RunLater queues a paused connection's turn behind every waiting task (see
// later), or starts it on a goroutine of its own when that queue is full or
// the pool has stopped. It never blocks.
func (t *Pool) RunLater(task func()) {
	if !t.send(t.later, task) {
		go task()
	}
}

// Run queues task for a worker, or starts it on a goroutine of its own when
// the queue is full or the pool has stopped. It never blocks.
func (t *Pool) Run(task func()) {
	if !t.send(t.queue, task) {
		go task()
		return
	}
	// Buffered rather than handed to a waiting worker: make sure someone
	// checks that it gets taken. (A worker's idle count can lag: one just
	// handed a task still counts as idle.)
	if len(t.queue) > 0 {
		t.arm()
	}
}

// send puts task on q unless q is full (counted as spilled) or the pool
// has stopped; Stop closes q only once no send is in progress.
func (t *Pool) send(q chan func(), task func()) bool {
	t.sending.Add(1)
	defer t.sending.Add(-1)
	if t.stopped.Load() {
		return false
	}
	select {
	case q <- task:
		return true
	default:
		t.spilled.Add(1)
		return false
	}
}

// arm makes sure the watchdog will look at the queue within stallAfter.
func (t *Pool) arm() {
	// Load first: under load nearly every enqueue finds it armed, and a
	// failed CompareAndSwap still takes the cache line exclusively.
	if !t.armed.Load() && t.armed.CompareAndSwap(false, true) {
		t.watchdog.Reset(time.Duration(t.stallAfter))
	}
}

// watch runs on the watchdog timer: it starts a rescuer if the workers are
// stalled, and looks again later while tasks wait.
func (t *Pool) watch() {
	t.armed.Store(false)
	if t.stopped.Load() || len(t.queue) == 0 {
		return
	}
	if t.stalled() {
		t.rescues.Add(1)
		t.lastTake.Store(t.now()) // one rescuer per stallAfter at most
		go t.rescue()
	}
	if len(t.queue) > 0 {
		t.arm()
	}
}

// stalled reports whether queued tasks are stuck behind workers that are
// all busy with long tasks.
func (t *Pool) stalled() bool {
	return len(t.queue) > 0 && t.idle.Load() == 0 && t.now()-t.lastTake.Load() > t.stallAfter
}

// rescue takes queued tasks until the queue is empty.
func (t *Pool) rescue() {
	for {
		select {
		case task, ok := <-t.queue:
			if !ok {
				return
			}
			t.lastTake.Store(t.now())
			task()
		default:
			return
		}
	}
}

// Queued is the number of tasks waiting for a worker.
func (t *Pool) Queued() int { return len(t.queue) }

// Spilled is how many tasks found their queue full and ran on a goroutine
// of their own.
func (t *Pool) Spilled() uint64 { return t.spilled.Load() }

// Rescues is how many rescuers the watchdog has started.
func (t *Pool) Rescues() uint64 { return t.rescues.Load() }

// Stop lets the workers finish what is queued and exit, waiting at most
// patience for them; it reports whether they did. Tasks that arrive
// afterwards get a goroutine each.
func (t *Pool) Stop(patience time.Duration) bool {
	t.stopped.Store(true)
	t.watchdog.Stop()
	for t.sending.Load() != 0 {
		runtime.Gosched()
	}
	close(t.queue)
	close(t.later)
	done := make(chan struct{})
	go func() { t.workers.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(patience):
		return false
	}
}
