package main

import (
	"errors"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/cloudwego/netpoll"
)

// errHandedOff ends the old process's Serve once a successor serves the
// listener. netpoll reads an accept error that says "closed" as the
// listener's end: it takes the descriptor out of its epoll set and returns
// from Serve, without closing it.
var errHandedOff = errors.New("listener closed here: a successor serves it")

// handoffListener is the main listener as netpoll sees it, with two things
// a live upgrade needs that netpoll's own wrapper lacks:
//
//   - handOff stops this process accepting while the socket stays open
//     for the successor, which holds the same socket through its own
//     descriptor;
//   - every accepted socket is close-on-exec before anyone can fork:
//     netpoll accepts with plain accept(2), so without this a successor
//     would inherit every connection and keep it open after this process
//     closed it, and the peer would hang instead of seeing the close.
type handoffListener struct {
	netpoll.Listener
	unix      *net.UnixListener // nil for TCP
	handedOff atomic.Bool
}

func newHandoffListener(ln net.Listener) (*handoffListener, error) {
	np, err := netpoll.ConvertListener(ln)
	if err != nil {
		return nil, err
	}
	ul, _ := ln.(*net.UnixListener)
	return &handoffListener{Listener: np, unix: ul}, nil
}

// Accept accepts one connection, close-on-exec. Holding ForkLock for
// reading makes accept and the flag one step as far as os/exec's fork is
// concerned, so a socket accepted while an upgrade starts its successor
// cannot slip through between the two.
func (l *handoffListener) Accept() (net.Conn, error) {
	if l.handedOff.Load() {
		return nil, errHandedOff
	}
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	c, err := l.Listener.Accept()
	if c != nil {
		if fc, ok := c.(interface{ Fd() int }); ok {
			syscall.CloseOnExec(fc.Fd())
		}
	}
	return c, err
}

// handOff stops this process accepting: the next readiness the poller
// sees ends its Serve (errHandedOff) without accepting. A unix socket's
// file then stays when this process closes the listener, since the
// successor serves it.
func (l *handoffListener) handOff() {
	if l.unix != nil {
		l.unix.SetUnlinkOnClose(false)
	}
	l.handedOff.Store(true)
}
