package main

import (
	"fmt"
	"net"
	"os"
)

// notifySocketEnv is where systemd (Type=notify) says to send state
// changes: a unix datagram socket, a path or, starting with '@', a name in
// the abstract namespace.
const notifySocketEnv = "NOTIFY_SOCKET"

// sdNotify sends state ("READY=1", "MAINPID=1234") to the service
// manager, as sd_notify(3) does; without $NOTIFY_SOCKET it does nothing,
// so a relay run by hand or under Type=exec is unaffected. The unit's
// NotifyAccess=all lets a successor and its predecessor both send.
func sdNotify(state string) error {
	name := os.Getenv(notifySocketEnv)
	if name == "" {
		return nil
	}
	// A leading '@' names an abstract socket: the kernel wants a NUL
	// there, which the syscall package writes for a name that starts
	// with '@'.
	addr := &net.UnixAddr{Name: name, Net: "unixgram"}
	c, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("telling the service manager %q: %v", state, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("telling the service manager %q: %v", state, err)
	}
	return nil
}
