package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"switchboard/loop"
)

// upgrader runs the old process's side of a live upgrade, from the
// signal loop (waitForStop): at most one at a time, its outcome counted
// and logged in one line.
type upgrader struct {
	me      self
	srv     *loop.Server
	selfErr error // recordSelf's: no upgrade can start
	main    *handoffListener
	admin   net.Listener // nil when --admin-listen is empty
	timeout time.Duration
	log     *slog.Logger
	done    chan upgradeResult
	running bool // touched by the signal loop alone
}

// begin starts an upgrade on SIGUSR2; one already running makes the signal
// a no-op, since two successors would race for the same listeners.
func (u *upgrader) begin() {
	if u.running {
		u.log.Warn("signal ignored", "signal", "SIGUSR2", "why", "an upgrade is already running")
		return
	}
	u.running = true
	if u.selfErr != nil {
		u.done <- upgradeResult{err: u.selfErr}
		return
	}
	go func() {
		adminFD := -1
		if u.admin != nil {
			fd, err := dupListener(u.admin.(*net.TCPListener))
			if err != nil {
				u.done <- upgradeResult{err: fmt.Errorf("the admin listener's descriptor: %v", err)}
				return
			}
			defer syscall.Close(fd)
			adminFD = fd
		}
		u.done <- upgrade(u.me, u.srv, u.main, adminFD, u.timeout, u.log)
	}()
}

// dupListener is a close-on-exec copy of ln's descriptor for the hello.
// Not ln.File().Fd(): Fd puts the socket in blocking mode, and that flag
// belongs to the socket, not the descriptor, so this process's own accept
// loop would then block in the kernel, where closing the listener cannot
// wake it.
func dupListener(ln syscall.Conn) (int, error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return -1, err
	}
	dup, errno := -1, syscall.Errno(0)
	if err := rc.Control(func(fd uintptr) {
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
		dup, errno = int(r), e
	}); err != nil {
		return -1, err
	}
	if errno != 0 {
		return -1, errno
	}
	return dup, nil
}

// finish counts and logs an upgrade's outcome. It reports whether the
// successor now serves: then this process has stopped accepting, and
// systemd has been told the successor is the service's main process.
func (u *upgrader) finish(res upgradeResult) bool {
	u.running = false
	if res.err != nil {
		upgradeCounts.rolledBack.Add(1)
		u.log.Warn("upgrade finished", "outcome", "rolled_back", "successor_pid", res.pid, "took", res.took, "err", res.err.Error())
		return false
	}
	upgradeCounts.succeeded.Add(1)
	u.main.handOff()
	u.log.Info("upgrade finished", "outcome", "succeeded", "successor_pid", res.pid, "took", res.took,
		"connections_handed", res.handed, "pause", res.pause, "quiesce", res.quiesce)
	if err := sdNotify("MAINPID=" + strconv.Itoa(res.pid)); err != nil {
		u.log.Warn("service manager not told", "err", err)
	}
	return true
}

// abandon, on SIGTERM or SIGINT, waits for an upgrade still running to end
// and stops a successor that got ready meanwhile, so a stop stops both.
func (u *upgrader) abandon() {
	if !u.running {
		return
	}
	res := <-u.done
	u.running = false
	if res.err == nil {
		u.log.Info("upgrade abandoned", "successor_pid", res.pid, "why", "a stop signal arrived while it ran")
		_ = syscall.Kill(res.pid, syscall.SIGTERM)
		return
	}
	u.log.Warn("upgrade finished", "outcome", "rolled_back", "successor_pid", res.pid, "took", res.took, "err", res.err.Error())
	upgradeCounts.rolledBack.Add(1)
}

// predecessor is, in a successor, the process it upgrades: the handover
// socket and the listeners the hello carried.
type predecessor struct {
	conn     *net.UnixConn
	hello    hello
	main     net.Listener
	admin    net.Listener // nil when the old process had none, or once taken
	pausedAt time.Time    // when the old process's last connection stopped reading
}

// takeOver reads the hello on --upgrade-fd and turns its descriptors into
// listeners. A hello this build cannot read is refused in an answer, so
// the old process logs why, and the successor exits non-zero.
func takeOver(opts *options, log *slog.Logger) (*predecessor, error) {
	c, h, files, err := receiveHello(opts.upgradeFD, opts.upgradeTimeout)
	if err != nil {
		if c != nil {
			_ = sendAnswer(c, answer{Error: err.Error()})
			c.Close()
		}
		return nil, err
	}
	p := &predecessor{conn: c, hello: h}
	refuse := func(err error) (*predecessor, error) {
		_ = sendAnswer(c, answer{Error: err.Error()})
		for _, f := range files {
			f.Close()
		}
		p.close()
		return nil, err
	}
	mf := files[listenerMain]
	if mf == nil {
		return refuse(fmt.Errorf("the hello from pid %d carries no main listener", h.FromPID))
	}
	if p.main, err = inheritedListener(mf, opts.listen); err != nil {
		return refuse(err)
	}
	if af := files[listenerAdmin]; af != nil {
		ln, err := net.FileListener(af)
		af.Close()
		if err != nil {
			p.main.Close()
			return refuse(fmt.Errorf("the inherited admin listener: %v", err))
		}
		if opts.admin == "" {
			ln.Close() // --admin-listen turned off: the old process closes its copy at exit
		} else {
			p.admin = ln
		}
	}
	log.Info("taking over", "upgraded_from", h.FromPID)
	return p, nil
}

// inheritedListener is the main listener the hello carried, checked
// against --listen: a successor started with another kind of address would
// otherwise serve the old one without a word.
func inheritedListener(f *os.File, listenAddr string) (net.Listener, error) {
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("the inherited main listener: %v", err)
	}
	path, isUnix := unixPath(listenAddr)
	ul, gotUnix := ln.(*net.UnixListener)
	switch {
	case isUnix != gotUnix:
		ln.Close()
		return nil, fmt.Errorf("the inherited main listener is %s, --listen %s wants the other kind", ln.Addr().Network(), listenAddr)
	case isUnix && ul.Addr().String() != path:
		ln.Close()
		return nil, fmt.Errorf("the inherited main listener is %s, --listen asks for %s", ul.Addr(), listenAddr)
	case isUnix:
		// Not unlinked while the old process may still roll back; ready
		// turns it on.
		ul.SetUnlinkOnClose(false)
	}
	return ln, nil
}

// fromPID is the old process's pid, 0 when this process was not started
// by an upgrade.
func (p *predecessor) fromPID() int {
	if p == nil {
		return 0
	}
	return p.hello.FromPID
}

// ready tells systemd and the old process that this one serves the
// listeners; from here the unix socket file is this process's to remove
// at exit, and the upgrade counts carry on from the old process's.
//
// The adopted connections are read only once the old process answers
// RELEASED: until then it may still roll back (it missed the READY within
// --upgrade-timeout, or failed after), and must find every stream where it
// left it. Without the release (the old process rolled back, killed us or
// died) ready returns an error and this process must exit without reading:
// the connections close, none is left half-read.
func (p *predecessor) ready(ln *handoffListener, srv *loop.Server, timeout time.Duration) error {
	defer p.conn.Close()
	_ = sdNotify("READY=1")
	_ = sendAnswer(p.conn, answer{Ready: true})
	a, err := readAnswer(p.conn, time.Now().Add(timeout))
	if err != nil || !a.Released {
		if err == nil {
			err = errors.New("its answer to READY was not RELEASED")
		}
		return fmt.Errorf("the old process did not release the connections: %v", err)
	}
	srv.ResumeAdopted()
	if !p.pausedAt.IsZero() {
		upgradeCounts.pauseNs.Store(max(int64(time.Since(p.pausedAt)), 0))
	}
	upgradeCounts.succeeded.Store(p.hello.UpgradesSucceeded + 1)
	upgradeCounts.rolledBack.Store(p.hello.UpgradesRolledBack)
	if ln.unix != nil {
		ln.unix.SetUnlinkOnClose(true)
	}
	return nil
}

// close releases what takeOver opened and nobody took.
func (p *predecessor) close() {
	p.conn.Close()
	if p.admin != nil {
		p.admin.Close()
	}
}
