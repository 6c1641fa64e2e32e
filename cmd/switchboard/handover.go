package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// handoverFormat is the version of what crosses the handover socket. A
// successor that reads another refuses it, and the old process keeps
// serving. Bump it whenever a field changes meaning or a new one must be
// understood. Format 2 adds the connection handover (connhandover.go):
// a successor of format 1 refuses it, and the old process serves on.
const handoverFormat = 2

// maxHandoverMessage bounds one message on the handover socket. The
// hello and the answer are a few hundred bytes of JSON; a SEQPACKET read
// into a smaller buffer would silently cut the message.
const maxHandoverMessage = 64 << 10

// The listeners a hello may carry, in the order their descriptors follow.
const (
	listenerMain  = "main"
	listenerAdmin = "admin"
)

// hello is the old process's first and, in format 1, only message: the
// listening sockets (as SCM_RIGHTS descriptors, named in Listeners) and
// the upgrade counts so far, so switchboard_upgrades_total keeps counting
// across the chain of processes instead of restarting at each one.
type hello struct {
	Format             int      `json:"format"`
	FromPID            int      `json:"from_pid"`
	Listeners          []string `json:"listeners"`
	UpgradesSucceeded  int64    `json:"upgrades_succeeded"`
	UpgradesRolledBack int64    `json:"upgrades_rolled_back"`
	ConnectionsHanded  int64    `json:"connections_handed"` // over every upgrade so far
}

// answer is the successor's reply: Ready once it serves the listeners,
// else Error saying why it will not.
type answer struct {
	Format int  `json:"format"`
	PID    int  `json:"pid"`
	Ready  bool `json:"ready,omitempty"`
	// WantConns: the successor is set up and waits for the connection
	// batches; the old process freezes only now, so the pause its peers
	// see does not include the successor's start.
	WantConns bool `json:"want_conns,omitempty"`
	// Released, from the old process after READY: it has let go of the
	// connections and will not roll back, so the successor may read them.
	Released bool   `json:"released,omitempty"`
	Error    string `json:"error,omitempty"`
}

// handoverPair is a connected SEQPACKET pair: ours stays here, theirs
// becomes the successor's --upgrade-fd. SEQPACKET keeps each message
// whole and reads end-of-file the moment the successor dies.
func handoverPair() (ours *net.UnixConn, theirs *os.File, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("handover socket pair: %v", err)
	}
	f := os.NewFile(uintptr(fds[0]), "handover")
	c, err := net.FileConn(f) // dups it
	f.Close()
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, fmt.Errorf("handover socket: %v", err)
	}
	return c.(*net.UnixConn), os.NewFile(uintptr(fds[1]), "handover-successor"), nil
}

// sendHello writes h with the descriptors fds (one per h.Listeners entry).
func sendHello(c *net.UnixConn, h hello, fds []int) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	_, _, err = c.WriteMsgUnix(b, syscall.UnixRights(fds...), nil)
	return err
}

// readAnswer waits until deadline for the successor's answer. End of file
// means it exited (or closed the socket) without one.
func readAnswer(c *net.UnixConn, deadline time.Time) (answer, error) {
	var a answer
	if err := c.SetReadDeadline(deadline); err != nil {
		return a, err
	}
	b := make([]byte, maxHandoverMessage)
	n, err := c.Read(b)
	if err != nil {
		return a, err
	}
	if n == 0 {
		return a, errors.New("successor closed the handover socket without answering")
	}
	if err := json.Unmarshal(b[:n], &a); err != nil {
		return a, fmt.Errorf("successor's answer is not JSON: %v", err)
	}
	return a, nil
}

// receiveHello reads the old process's hello from the handover descriptor
// fd, with the listeners it carries, named as in the hello.
func receiveHello(fd int, timeout time.Duration) (*net.UnixConn, hello, map[string]*os.File, error) {
	var h hello
	f := os.NewFile(uintptr(fd), "handover")
	if f == nil {
		return nil, h, nil, fmt.Errorf("--upgrade-fd %d is not an open descriptor", fd)
	}
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, h, nil, fmt.Errorf("--upgrade-fd %d is not the handover socket: %v", fd, err)
	}
	c, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, h, nil, fmt.Errorf("--upgrade-fd %d is not a unix socket", fd)
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	b := make([]byte, maxHandoverMessage)
	oob := make([]byte, syscall.CmsgSpace(4*8)) // room for a few descriptors
	n, oobn, _, _, err := c.ReadMsgUnix(b, oob)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return nil, h, nil, fmt.Errorf("reading the hello: %v", err)
	}
	files, err := parseRights(oob[:oobn])
	if err != nil {
		c.Close()
		return nil, h, nil, err
	}
	fail := func(err error) (*net.UnixConn, hello, map[string]*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return c, h, nil, err
	}
	if err := json.Unmarshal(b[:n], &h); err != nil {
		return fail(fmt.Errorf("the hello is not JSON: %v", err))
	}
	if h.Format != handoverFormat {
		return fail(fmt.Errorf("handover format %d from pid %d, this build reads only format %d", h.Format, h.FromPID, handoverFormat))
	}
	if len(h.Listeners) != len(files) {
		return fail(fmt.Errorf("the hello names %d listeners and carries %d descriptors", len(h.Listeners), len(files)))
	}
	named := make(map[string]*os.File, len(files))
	for i, name := range h.Listeners {
		named[name] = files[i]
	}
	return c, h, named, nil
}

// parseRights turns the SCM_RIGHTS control messages in oob into files.
func parseRights(oob []byte) ([]*os.File, error) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("the hello's control message: %v", err)
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := syscall.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			syscall.CloseOnExec(fd) // ours alone; a later upgrade passes what it means to
			files = append(files, os.NewFile(uintptr(fd), "inherited-listener"))
		}
	}
	return files, nil
}

// sendAnswer writes a to the old process.
func sendAnswer(c *net.UnixConn, a answer) error {
	a.Format, a.PID = handoverFormat, os.Getpid()
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = c.Write(b)
	return err
}
