package loop

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
	rt := newReadTasks(1, 1, time.Hour)
	release := make(chan struct{})
	busy, queuedRan, spilledRan := make(chan struct{}), make(chan struct{}), make(chan struct{})
	rt.run(func() { close(busy); <-release })
	waitClosed(t, busy, "the worker to start the first task")
	rt.run(func() { close(queuedRan) })
	if got := rt.queued(); got != 1 {
		t.Fatalf("queued = %d with the worker busy, want 1", got)
	}
	rt.run(func() { close(spilledRan) })
	waitClosed(t, spilledRan, "the spilled task (it must not wait for the busy worker)")
	if got := rt.spilled.Load(); got != 1 {
		t.Fatalf("spilled = %d, want 1", got)
	}
	select {
	case <-queuedRan:
		t.Fatal("the queued task ran while the only worker was busy")
	default:
	}
	close(release)
	waitClosed(t, queuedRan, "the queued task after the worker freed up")
	if !rt.stop(10 * time.Second) {
		t.Fatal("workers did not exit")
	}
}

// Tasks submitted while stop runs are each run exactly once: queued ones
// by the workers before they exit, later ones on their own goroutines.
func TestReadTasksStopRacesRun(t *testing.T) {
	rt := newReadTasks(2, 8, time.Hour)
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
				rt.run(func() {
					if ran.Add(1) == total {
						close(all)
					}
				})
			}
		}()
	}
	if !rt.stop(10 * time.Second) { // concurrently with the submitters
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
	rt := newReadTasksClock(1, 8, time.Millisecond, clock.Load)
	release := make(chan struct{})
	busy, firstRan, secondRan := make(chan struct{}), make(chan struct{}), make(chan struct{})
	rt.run(func() { close(busy); <-release })
	waitClosed(t, busy, "the worker to start the long task")
	rt.run(func() { close(firstRan) })
	rt.run(func() { close(secondRan) })

	clock.Store(int64(time.Millisecond)) // exactly stallAfter: not yet a stall
	rt.watch()
	if got := rt.queued(); got != 2 || rt.rescues.Load() != 0 {
		t.Fatalf("at stallAfter: %d queued, %d rescues; want 2 queued, no rescue", got, rt.rescues.Load())
	}

	clock.Store(int64(time.Millisecond) + 1)
	rt.watch()
	waitClosed(t, firstRan, "the first queued task, run by the rescuer")
	waitClosed(t, secondRan, "the second queued task, run by the rescuer")
	if got := rt.rescues.Load(); got != 1 {
		t.Fatalf("rescues = %d, want 1", got)
	}
	close(release)
	if !rt.stop(10 * time.Second) {
		t.Fatal("workers did not exit")
	}
}

// The watchdog fires on its own (real clock): a queued task behind a held
// worker runs within a few stall periods without any further task arriving.
func TestReadTasksWatchdogNeedsNoNewTasks(t *testing.T) {
	rt := newReadTasks(1, 8, time.Millisecond)
	release := make(chan struct{})
	busy, queuedRan := make(chan struct{}), make(chan struct{})
	rt.run(func() { close(busy); <-release })
	waitClosed(t, busy, "the worker to start the long task")
	rt.run(func() { close(queuedRan) })
	waitClosed(t, queuedRan, "the watchdog to rescue the queued task")
	close(release)
	if !rt.stop(10 * time.Second) {
		t.Fatal("workers did not exit")
	}
}

// Paused connections' turns queued when stop begins still run: a worker
// that sees one queue closed finishes both (Server.stop queues the close
// requests of paused connections there).
func TestReadTasksStopRunsBothQueues(t *testing.T) {
	for range 20 {
		rt := newReadTasks(2, 64, time.Hour)
		release := make(chan struct{})
		var started sync.WaitGroup
		started.Add(2)
		for range 2 {
			rt.run(func() { started.Done(); <-release })
		}
		started.Wait() // both workers busy: what follows stays queued
		var ran atomic.Int32
		for range 10 {
			rt.runLater(func() { ran.Add(1) })
			rt.run(func() { ran.Add(1) })
		}
		stopped := make(chan struct{})
		go func() { rt.stop(10 * time.Second); close(stopped) }()
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
