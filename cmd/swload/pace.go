package main

import (
	"context"
	"sync"
	"time"
)

// Pacing and waiting, shared by the engine and the flood.

// pace calls fn(i) for i = 0 … n-1 at rate calls per second (rate <= 0: as
// fast as fn returns) until ctx ends, stop closes or fn returns false. It
// returns how many calls were made.
func pace(ctx context.Context, rate float64, n int, stop <-chan struct{}, fn func(i int) bool) int {
	start := time.Now()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for i := 0; n < 0 || i < n; i++ {
		if rate > 0 {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			// Sleep only when ahead by more than a millisecond; behind,
			// catch up in a burst (timer granularity is ~1 ms).
			if wait := time.Until(due); wait > time.Millisecond {
				t.Reset(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					return i
				case <-stop:
					return i
				}
			}
		}
		select {
		case <-ctx.Done():
			return i
		case <-stop:
			return i
		default:
		}
		if !fn(i) {
			return i
		}
	}
	return n
}

// waitTimeout waits for wg up to d and reports whether it finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// sleepCtx waits d unless ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
