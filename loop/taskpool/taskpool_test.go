package taskpool

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitClosed fails the test if ch is not closed within 10 s.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// At the edge of the queue bound: one worker busy, one task queued, the
// next task neither waits nor blocks its caller: it runs on a goroutine of
// its own and is counted.
func TestReadTasksSpillAtQueueBound(t *testing.T) {
	rt := New(1, 1, time.Hour)
	release := make(chan struct{})
	busy, queuedRan, spilledRan := make(chan struct{}), make(chan struct{}), make(chan struct{})
	rt.Run(func() { close(busy); <-release })
	waitClosed(t, busy, "the worker to start the first task")
	rt.Run(func() { close(queuedRan) })
	if got := rt.Queued(); got != 1 {
		t.Fatalf("queued = %d with the worker busy, want 1", got)
	}
	rt.Run(func() { close(spilledRan) })
	waitClosed(t, spilledRan, "the spilled task (it must not wait for the busy worker)")
	if got := rt.Spilled(); got != 1 {
		t.Fatalf("spilled = %d, want 1", got)
	}
	select {
	case <-queuedRan:
		t.Fatal("the queued task ran while the only worker was busy")
	default:
	}
	close(release)
	waitClosed(t, queuedRan, "the queued task after the worker freed up")
	if !rt.Stop(10 * time.Second) {
		t.Fatal("workers did not exit")
	}
}

// Tasks submitted while stop runs are each run exactly once: queued ones
// by the workers before they exit, later ones on their own goroutines.
func TestReadTasksStopRacesRun(t *testing.T) {
	rt := New(2, 8, time.Hour)
	const submitters, each = 8, 500
	const total = submitters * each
	var ran atomic.Int64
	all := make(chan struct{})
	var wg sync.WaitGroup
	for range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				rt.Run(func() {
					if ran.Add(1) == total {
						close(all)
					}
				})
			}
		}()
	}
	if !rt.Stop(10 * time.Second) { // concurrently with the submitters
		t.Fatal("workers did not exit")
	}
	wg.Wait()
	waitClosed(t, all, "every submitted task to run")
	select {
	case _, open := <-rt.queue:
		if open {
			t.Fatal("a task was left in the queue after stop")
		}
	default:
		t.Fatal("queue not closed after stop")
	}
}

// At the edge of the stall bound: with the only worker held by a long task
// and tasks queued, the watchdog rescues nothing until the worker has taken
// nothing for stallAfter; after that it starts a rescuer, which runs the
// queued tasks while the worker is still held.
func TestReadTasksRescueStalledQueue(t *testing.T) {
	var clock atomic.Int64
	rt := newClock(1, 8, time.Millisecond, clock.Load)
	release := make(chan struct{})
	busy, firstRan, secondRan := make(chan struct{}), make(chan struct{}), make(chan struct{})
	rt.Run(func() { close(busy); <-release })
	waitClosed(t, busy, "the worker to start the long task")
	rt.Run(func() { close(firstRan) })
	rt.Run(func() { close(secondRan) })

	clock.Store(int64(time.Millisecond)) // exactly stallAfter: not yet a stall
	rt.watch()
	if got := rt.Queued(); got != 2 || rt.Rescues() != 0 {
		t.Fatalf("at stallAfter: %d queued, %d rescues; want 2 queued, no rescue", got, rt.Rescues())
	}

	clock.Store(int64(time.Millisecond) + 1)
	rt.watch()
	waitClosed(t, firstRan, "the first queued task, run by the rescuer")
	waitClosed(t, secondRan, "the second queued task, run by the rescuer")
	if got := rt.Rescues(); got != 1 {
		t.Fatalf("rescues = %d, want 1", got)
	}
	close(release)
	if !rt.Stop(10 * time.Second) {
		t.Fatal("workers did not exit")
	}
}

// The watchdog fires on its own (real clock): a queued task behind a held
// worker runs within a few stall periods without any further task arriving.
func TestReadTasksWatchdogNeedsNoNewTasks(t *testing.T) {
	rt := New(1, 8, time.Millisecond)
	release := make(chan struct{})
	busy, queuedRan := make(chan struct{}), make(chan struct{})
	rt.Run(func() { close(busy); <-release })
	waitClosed(t, busy, "the worker to start the long task")
	rt.Run(func() { close(queuedRan) })
	waitClosed(t, queuedRan, "the watchdog to rescue the queued task")
	close(release)
	if !rt.Stop(10 * time.Second) {
		t.Fatal("workers did not exit")
	}
}

// Paused connections' turns queued when stop begins still run: a worker
// that sees one queue closed finishes both (Server.stop queues the close
// requests of paused connections there).
func TestReadTasksStopRunsBothQueues(t *testing.T) {
	for range 20 {
		rt := New(2, 64, time.Hour)
		release := make(chan struct{})
		var started sync.WaitGroup
		started.Add(2)
		for range 2 {
			rt.Run(func() { started.Done(); <-release })
		}
		started.Wait() // both workers busy: what follows stays queued
		var ran atomic.Int32
		for range 10 {
			rt.RunLater(func() { ran.Add(1) })
			rt.Run(func() { ran.Add(1) })
		}
		stopped := make(chan struct{})
		go func() { rt.Stop(10 * time.Second); close(stopped) }()
		for !rt.stopped.Load() {
			runtime.Gosched()
		}
		close(release)
		waitClosed(t, stopped, "stop")
		if n := ran.Load(); n != 20 {
			t.Fatalf("%d of 20 queued tasks ran by the time stop returned", n)
		}
	}
}

// Paused connections' turns wait behind light tasks: with the only worker
// held while turns and then one light task queue up, the light task runs
// before all but a few of the turns, and every turn still runs.
func TestReadTasksLaterYieldsToQueue(t *testing.T) {
	rt := New(1, 64, time.Hour)
	release := make(chan struct{})
	busy, lightRan, allLater := make(chan struct{}), make(chan struct{}), make(chan struct{})
	rt.Run(func() { close(busy); <-release })
	waitClosed(t, busy, "the worker to start the first task")
	const turns = 4 * laterEvery
	var later atomic.Int32
	for range turns {
		rt.RunLater(func() {
			if later.Add(1) == turns {
				close(allLater)
			}
		})
	}
	var before int32
	rt.Run(func() { before = later.Load(); close(lightRan) })
	close(release)
	waitClosed(t, lightRan, "the light task")
	waitClosed(t, allLater, "every paused connection's turn")
	if before >= laterEvery {
		t.Fatalf("%d turns ran before the light task, want fewer than %d", before, laterEvery)
	}
	if !rt.Stop(10 * time.Second) {
		t.Fatal("workers did not exit")
	}
}
