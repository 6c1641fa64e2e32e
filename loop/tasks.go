package loop

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// readTasks runs one Server's netpoll read tasks on a few long-lived
// workers fed by a bounded queue.
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
// workers keep every core busy, and a slow peer holds none of them.
//
// The queue is the bound: when it is full the task runs on a fresh
// goroutine instead (counted in Spilled), so the poller never blocks and no
// task waits behind an unbounded backlog.
type readTasks struct {
	queue   chan func()
	spilled atomic.Uint64

	// stop closes queue once no run call can still be sending to it:
	// run announces itself in sending before it looks at stopped.
	sending atomic.Int32
	stopped atomic.Bool
	workers sync.WaitGroup
}

func newReadTasks(workers, depth int) *readTasks {
	t := &readTasks{queue: make(chan func(), depth)}
	t.workers.Add(workers)
	for range workers {
		go t.work()
	}
	return t
}

func (t *readTasks) work() {
	defer t.workers.Done()
	for task := range t.queue {
		task()
	}
}

// run queues task for a worker, or starts it on its own goroutine when the
// queue is full or the server has stopped. It never blocks.
func (t *readTasks) run(task func()) {
	t.sending.Add(1)
	if !t.stopped.Load() {
		select {
		case t.queue <- task:
			t.sending.Add(-1)
			return
		default:
			t.spilled.Add(1)
		}
	}
	t.sending.Add(-1)
	go task()
}

// queued is the number of tasks waiting for a worker.
func (t *readTasks) queued() int { return len(t.queue) }

// stop lets the workers finish what is queued and exit, waiting at most
// patience for them; it reports whether they did. Tasks that arrive
// afterwards get a goroutine each.
func (t *readTasks) stop(patience time.Duration) bool {
	t.stopped.Store(true)
	for t.sending.Load() != 0 {
		runtime.Gosched()
	}
	close(t.queue)
	done := make(chan struct{})
	go func() { t.workers.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(patience):
		return false
	}
}
