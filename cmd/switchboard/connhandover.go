package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"switchboard/loop"
)

// The connection handover (format 2) follows the hello: the successor
// answers WantConns once it could serve them, the old process freezes its
// relay (loop.Server.Freeze) and sends every connection's state record in
// batches, each batch's sockets riding along in SCM_RIGHTS, the last batch
// marked. The successor adopts them and only then answers READY.

// connBatchFDs is the most sockets one batch carries: the kernel takes at
// most 253 descriptors in one SCM_RIGHTS message (SCM_MAX_FD).
const connBatchFDs = 200

// connBatchBytes is the most JSON one batch carries before it is cut: a
// SEQPACKET message must fit the socket's send buffer whole (212,992 bytes
// by default, net.core.wmem_default), and staged input travels base64.
const connBatchBytes = 96 << 10

// connBatch is one message of the connection handover.
type connBatch struct {
	Records []loop.HandedConn `json:"records"`
	Last    bool              `json:"last,omitempty"`
	// PausedAt, on the last batch: when the old process's last connection
	// stopped reading (Unix ns; both processes read one clock), the start
	// of the pause the peers see.
	PausedAt int64 `json:"paused_at,omitempty"`
}

// sendConns writes h's records in batches.
func sendConns(c *net.UnixConn, h *loop.Handover) error {
	fdi := 0
	var b connBatch
	var fds []int
	size := 0
	flush := func(last bool) error {
		b.Last = last
		if last {
			b.PausedAt = h.Paused.UnixNano()
		}
		js, err := json.Marshal(b)
		if err != nil {
			return err
		}
		var oob []byte
		if len(fds) > 0 {
			oob = syscall.UnixRights(fds...)
		}
		if _, _, err := c.WriteMsgUnix(js, oob, nil); err != nil {
			return fmt.Errorf("sending %d connection records (%d bytes): %w", len(b.Records), len(js), err)
		}
		b.Records, fds, size = b.Records[:0], fds[:0], 0
		return nil
	}
	for _, r := range h.Records {
		js, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if len(js) > connBatchBytes {
			return fmt.Errorf("a %s connection holds %d bytes of state, more than one handover message carries", r.Role, len(js))
		}
		if len(fds) == connBatchFDs || size+len(js) > connBatchBytes {
			if err := flush(false); err != nil {
				return err
			}
		}
		b.Records = append(b.Records, r)
		size += len(js)
		if r.FD {
			fds = append(fds, h.FDs[fdi])
			fdi++
		}
	}
	return flush(true)
}

// receiveConns reads the batches up to the last, or fails at deadline.
// On an error the sockets received so far are closed (the old process
// keeps its own copies and serves on).
func receiveConns(c *net.UnixConn, deadline time.Time) (records []loop.HandedConn, fds []int, pausedAt time.Time, err error) {
	fail := func(err error) ([]loop.HandedConn, []int, time.Time, error) {
		for _, fd := range fds {
			syscall.Close(fd)
		}
		return nil, nil, time.Time{}, err
	}
	_ = c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 2*connBatchBytes)
	oob := make([]byte, syscall.CmsgSpace(4*connBatchFDs))
	for {
		n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			return fail(fmt.Errorf("reading connection records: %v", err))
		}
		got, perr := rightsFDs(oob[:oobn])
		fds = append(fds, got...)
		if perr != nil {
			return fail(perr)
		}
		if flags&(syscall.MSG_TRUNC|syscall.MSG_CTRUNC) != 0 {
			return fail(errors.New("a connection batch did not fit the receive buffer"))
		}
		var b connBatch
		if err := json.Unmarshal(buf[:n], &b); err != nil {
			return fail(fmt.Errorf("a connection batch is not JSON: %v", err))
		}
		records = append(records, b.Records...)
		if b.Last {
			return records, fds, time.Unix(0, b.PausedAt), nil
		}
	}
}

// rightsFDs are the descriptors in oob's SCM_RIGHTS messages, close-on-exec.
func rightsFDs(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("a connection batch's control message: %v", err)
	}
	var out []int
	for _, m := range msgs {
		fds, err := syscall.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			syscall.CloseOnExec(fd)
		}
		out = append(out, fds...)
	}
	return out, nil
}

// upgradeFaultEnv makes a successor fail in the middle of the handover,
// holding the connections' sockets but not reading them: the rollback
// tests' way to kill it at the worst moment. Unset in production.
const upgradeFaultEnv = "RELAYTEST_UPGRADE_FAULT" // not SWITCHBOARD_: that prefix is checked against the flags

// adopt asks the old process for its connections and serves them.
func (p *predecessor) adopt(srv *loop.Server, timeout time.Duration) (int, error) {
	if err := sendAnswer(p.conn, answer{WantConns: true}); err != nil {
		return 0, fmt.Errorf("asking for the connections: %v", err)
	}
	records, fds, pausedAt, err := receiveConns(p.conn, time.Now().Add(timeout))
	if err != nil {
		return 0, err
	}
	switch os.Getenv(upgradeFaultEnv) {
	case "exit-holding-conns":
		os.Exit(3)
	case "hang-holding-conns":
		time.Sleep(time.Hour)
	}
	n, err := srv.Adopt(records, fds)
	if err != nil {
		for _, fd := range fds {
			syscall.Close(fd)
		}
		return 0, err
	}
	if os.Getenv(upgradeFaultEnv) == "exit-after-adopt" {
		// Adopted, deadlines armed, traffic arriving: had Adopt started
		// reading, the old process's rollback would miss what was read.
		time.Sleep(100 * time.Millisecond)
		os.Exit(3)
	}
	p.pausedAt = pausedAt
	upgradeCounts.handed.Store(p.hello.ConnectionsHanded + int64(n))
	return n, nil
}
