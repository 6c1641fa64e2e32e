package loop

import (
	"syscall"
)

// Who owns a connection's descriptor. While netpoll has it (sockLive) every
// close goes through netpoll; while reading is paused (pause.go) netpoll has
// let go of it and the relay closes it itself. One atomic word holds the
// state and a close request, so a close from any goroutine (a writer, the
// wheel, shutdown) and a pause on the read task never both act on the
// descriptor.
const (
	sockLive    uint32 = iota // registered with netpoll: c.nc is the owner
	sockPausing               // Detach called; the close callback has not yet run
	sockPaused                // out of netpoll: the read side owns the descriptor
	sockClosed                // closed, or being closed by netpoll
	sockHanded                // a live upgrade's successor owns it now (handover.go): never touched again

	sockCloseAsked uint32 = 1 << 4 // a close arrived while pausing or paused
)

// closeSocket ends the connection's socket from any goroutine. While the
// read side owns the descriptor it only records the request; the read side
// acts on it at its next step (pause.go), so the close callback still runs
// exactly once and never beside a read.
func (c *conn) closeSocket() {
	for {
		s := c.sock.Load()
		switch s &^ sockCloseAsked {
		case sockLive:
			if c.sock.CompareAndSwap(s, sockClosed) {
				_ = c.nc.Close()
				return
			}
		case sockPausing, sockPaused:
			if s&sockCloseAsked != 0 {
				return
			}
			if c.sock.CompareAndSwap(s, s|sockCloseAsked) {
				if s == sockPaused {
					// A turn waiting for input or for its binary acts on it now.
					if c.state.park.CompareAndSwap(parkWaiting, parkNone) {
						c.queueStep()
					} else {
						c.srv.ready.kick(c)
					}
				}
				return
			}
		default:
			return
		}
	}
}

// closeAsked reports whether a close arrived while the read side owned the
// descriptor.
func (c *conn) closeAsked() bool { return c.sock.Load()&sockCloseAsked != 0 }

// closeOwned closes a descriptor the read side owns (paused, or never
// handed back to netpoll): the connection's close callback runs here, then
// the descriptor is closed. Only the read side calls it.
func (c *conn) closeOwned() {
	c.sock.Store(sockClosed)
	c.cleanup()
	_ = syscall.Close(int(c.fd))
}
