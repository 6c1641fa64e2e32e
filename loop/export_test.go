package loop

import (
	"sync"
	"testing"
	"time"
)

// Lifetime tests run in fractions of a second; the command keeps the floor.
func init() { minBinaryLifetime = 100 * time.Millisecond }

var hookNames = [...]string{
	hookClaimQueued:  "claim-queued",
	hookProbeExpired: "probe-expired",
	hookLeaving:      "leaving",
	hookAdmitted:     "admitted",
	hookProbeSent:    "probe-sent",
	hookBeforeArm:    "before-arm",
}

// CloseAtNextArm closes the next paused connection that is about to wait
// for input, from within its turn, after the turn's last look for a close:
// the interleaving of a close arriving (a linger, a failed writer) just as
// a paused socket arms.
func CloseAtNextArm(t testing.TB) {
	var once sync.Once
	g := func(p hookPoint, c *conn) {
		if p == hookBeforeArm {
			once.Do(c.closeSocket)
		}
	}
	testHook.Store(&g)
	t.Cleanup(func() { testHook.Store(nil) })
}

// SetTestHook has f called at the hook points of takeover.go until the test
// ends, with the point's name and the connection's server-id and remote
// address. f runs on the relay's goroutine and may block it.
func SetTestHook(t testing.TB, f func(point, serverID, remote string)) {
	g := func(p hookPoint, c *conn) { f(hookNames[p], c.serverID, c.nc.RemoteAddr().String()) }
	testHook.Store(&g)
	t.Cleanup(func() { testHook.Store(nil) })
}
