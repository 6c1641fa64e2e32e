package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"switchboard/loop"
)

// upgradeFDFlag is the internal flag that makes a process a successor: the
// descriptor of its end of the handover socket. The old process appends
// it, always in its one-token form, so a successor can drop it from the
// arguments it passes on to its own successor.
const upgradeFDFlag = "upgrade-fd"

// defaultUpgradeTimeout bounds a successor's start: exec, flag parsing,
// loop.New and the hello take tens of milliseconds; ten seconds leaves room
// for a loaded box and a cold page cache, and is short enough that a hung
// successor is killed before an operator wonders.
const defaultUpgradeTimeout = 10 * time.Second

// successorFD is the descriptor the handover socket gets in the
// successor: os/exec numbers ExtraFiles from 3, after stdin, stdout and
// stderr.
const successorFD = 3

// upgradeCounts is switchboard_upgrades_total: upgrades this process (and,
// through the hello, those before it) finished, by outcome.
var upgradeCounts struct {
	succeeded, rolledBack atomic.Int64
	// handed is switchboard_upgrade_connections_handed_total: connections
	// this process and those before it adopted from a predecessor.
	handed atomic.Int64
	// pauseNs is switchboard_upgrade_pause_seconds: in a successor, from
	// the predecessor's last connection stopping reading to this process
	// reading them all; 0 in a process not started by an upgrade.
	pauseNs atomic.Int64
}

// self is how this process starts its successor: the executable's path as
// it was at start, which names the new file once a release replaces it
// (/proc/self/exe would still name the old, deleted one), and the
// arguments and environment this process got.
type self struct {
	exe  string
	args []string
}

// recordSelf reads the executable's path; call it at start, before the
// file can be replaced.
func recordSelf(args []string) (self, error) {
	exe, err := os.Executable()
	if err != nil {
		return self{}, fmt.Errorf("finding the executable's path (a live upgrade starts it again): %v", err)
	}
	return self{exe: exe, args: withoutUpgradeFD(args)}, nil
}

// withoutUpgradeFD drops --upgrade-fd=N, which this process got from its
// own predecessor, so its successor gets the operator's arguments and one
// --upgrade-fd of its own.
func withoutUpgradeFD(args []string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		if strings.HasPrefix(a, "--"+upgradeFDFlag+"=") || strings.HasPrefix(a, "-"+upgradeFDFlag+"=") {
			continue
		}
		out = append(out, a)
	}
	return out
}

// upgradeResult is how one upgrade ended.
type upgradeResult struct {
	pid  int           // the successor's, 0 if it never started
	took time.Duration // from the signal to the outcome
	err  error         // nil: the successor serves the listeners
	// handed connections went to the successor; pause is from the
	// freeze to its READY (an upper bound of the time no connection was
	// read), quiesce the part until every connection had gone quiet.
	handed         int
	pause, quiesce time.Duration
}

// upgrade starts the successor, hands it the listeners and waits up to
// timeout for its READY. On any failure the successor is killed and the
// caller keeps serving: nothing here stops this process accepting.
func upgrade(me self, srv *loop.Server, main *handoffListener, adminFD int, timeout time.Duration, log *slog.Logger) upgradeResult {
	start := time.Now()
	deadline := start.Add(timeout)
	res := func(pid int, err error) upgradeResult {
		return upgradeResult{pid: pid, took: time.Since(start), err: err}
	}
	ours, theirs, err := handoverPair()
	if err != nil {
		return res(0, err)
	}
	defer ours.Close()
	if err := closeOnExecAll(); err != nil {
		theirs.Close()
		return res(0, err)
	}
	cmd := exec.Command(me.exe, append(append([]string(nil), me.args...), "--"+upgradeFDFlag+"="+strconv.Itoa(successorFD))...)
	cmd.Env = os.Environ()
	// The files themselves, not copies through a pipe: the successor
	// writes to the same journal stream, and no goroutine here has to
	// outlive this process.
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{theirs}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		return res(0, fmt.Errorf("starting the successor %s: %v", me.exe, err))
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// fail ends a failed upgrade with the successor gone. A closed socket
	// means it is exiting: its exit status, awaited until the deadline,
	// says more than the socket's error.
	fail := func(err error) upgradeResult {
		var patience time.Duration
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			patience = max(time.Until(deadline), 0)
		}
		timer := time.NewTimer(patience)
		defer timer.Stop()
		select {
		case werr := <-exited:
			if werr == nil {
				werr = errors.New("exit status 0")
			}
			return res(pid, fmt.Errorf("%v; the successor exited: %v", err, werr))
		case <-timer.C:
		}
		_ = cmd.Process.Kill()
		<-exited
		return res(pid, err)
	}

	h := hello{Format: handoverFormat, FromPID: os.Getpid(), Listeners: []string{listenerMain},
		UpgradesSucceeded: upgradeCounts.succeeded.Load(), UpgradesRolledBack: upgradeCounts.rolledBack.Load(),
		ConnectionsHanded: upgradeCounts.handed.Load()}
	fds := []int{main.Fd()}
	if adminFD >= 0 {
		h.Listeners = append(h.Listeners, listenerAdmin)
		fds = append(fds, adminFD)
	}
	if err := sendHello(ours, h, fds); err != nil {
		return fail(fmt.Errorf("sending the hello: %w", err))
	}
	a, err := readAnswer(ours, deadline)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fail(fmt.Errorf("no READY within --upgrade-timeout %v (no answer to the hello)", timeout))
	case err != nil:
		return fail(fmt.Errorf("reading the successor's answer: %w", err))
	case a.Error != "":
		return fail(fmt.Errorf("the successor refused: %s", a.Error))
	case !a.WantConns || a.Format != handoverFormat || a.PID != pid:
		return fail(fmt.Errorf("the successor's answer to the hello is not WANT_CONNS (format %d, pid %d)", a.Format, a.PID))
	}
	// From here this process's connections stop reading: every error
	// thaws them (they are read on the paused path from then on).
	frozeAt := time.Now()
	ho, err := srv.Freeze(deadline)
	if err != nil {
		return fail(fmt.Errorf("freezing the connections: %w", err))
	}
	if err := sendConns(ours, ho); err != nil {
		ho.Thaw()
		return fail(fmt.Errorf("handing the connections over: %w", err))
	}
	a, err = readAnswer(ours, deadline)
	if err != nil || a.Error != "" || !a.Ready || a.Format != handoverFormat || a.PID != pid {
		ho.Thaw()
	} else {
		ho.Release()
		// Only now may the successor read: had it read before, a rollback
		// here would have thawed streams missing what it took.
		if err := sendAnswer(ours, answer{Released: true}); err != nil {
			log.Warn("upgrade: the successor did not take the release; it holds the connections", "successor_pid", pid, "err", err.Error())
		}
		r := res(pid, nil)
		r.handed, r.pause = len(ho.FDs), time.Since(frozeAt)
		r.quiesce = ho.Paused.Sub(frozeAt)
		return r
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fail(fmt.Errorf("no READY within --upgrade-timeout %v", timeout))
	case err != nil:
		return fail(fmt.Errorf("reading the successor's answer: %w", err))
	case a.Error != "":
		return fail(fmt.Errorf("the successor refused: %s", a.Error))
	case !a.Ready || a.Format != handoverFormat || a.PID != pid:
		return fail(fmt.Errorf("the successor's answer is not READY (format %d, pid %d, ready %v)", a.Format, a.PID, a.Ready))
	}
	return res(pid, nil)
}

// closeOnExecAll marks every descriptor above stderr close-on-exec, so the
// successor inherits only what ExtraFiles passes on purpose (os/exec clears
// the flag on those in the child). Go's own descriptors have it already;
// netpoll's epoll and event descriptors, socket pairs and the sockets it
// accepted before handoffListener saw them do not, and a successor holding
// a connection's socket would keep it open after this process closed it.
func closeOnExecAll() error {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("listing descriptors to keep from the successor: %v", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("listing descriptors to keep from the successor: %v", err)
	}
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd <= syscall.Stderr {
			continue
		}
		syscall.CloseOnExec(fd) // the directory's own descriptor, already closed-on-exec, included
	}
	return nil
}
