package loop

import (
	"sync"
	"syscall"
)

// readyPoller tells the read side when a paused socket has input again. A
// paused socket is out of netpoll for good: the relay reads it itself, a
// turn at a time (pause.go), and between turns that found the kernel empty
// it waits here. One epoll instance and one goroutine serve every paused
// socket of a Server, created at the first pause; each socket is armed one
// shot at a time, so an event always means exactly one queued turn.
type readyPoller struct {
	epfd int
	wake [2]int // a pipe: writing to wake[1] ends run

	mu      sync.Mutex
	conns   map[int32]*readyEntry // by descriptor
	stopped bool                  // epfd is closed or closing: no epoll_ctl any more
}

type readyEntry struct {
	c     *conn
	armed bool // a one-shot wait is registered and no turn is queued
	added bool // the descriptor is in the epoll set
}

// readyBatch is how many events one epoll_wait returns at most; more wait
// for the next call.
const readyBatch = 128

func newReadyPoller() (*readyPoller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &readyPoller{epfd: epfd, conns: make(map[int32]*readyEntry)}
	if err := syscall.Pipe2(p.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		_ = syscall.Close(epfd)
		return nil, err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p.wake[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.wake[0], &ev); err != nil {
		p.closeFDs()
		return nil, err
	}
	go p.run()
	return p, nil
}

// track adds c, whose read side owns its descriptor now.
func (p *readyPoller) track(c *conn) {
	p.mu.Lock()
	p.conns[c.fd] = &readyEntry{c: c}
	p.mu.Unlock()
}

// arm asks for one turn of c to be queued once its socket is readable or
// hung up. The read side calls it after a turn found the kernel empty.
func (p *readyPoller) arm(c *conn) error {
	p.mu.Lock()
	e := p.conns[c.fd]
	if p.stopped || e == nil || e.c != c {
		p.mu.Unlock()
		return syscall.EBADF
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: c.fd}
	op := syscall.EPOLL_CTL_MOD
	if !e.added {
		op = syscall.EPOLL_CTL_ADD
	}
	if err := syscall.EpollCtl(p.epfd, op, int(c.fd), &ev); err != nil {
		p.mu.Unlock()
		return err
	}
	e.added, e.armed = true, true
	// A close asked after the turn last looked found nothing armed to
	// kick (kick takes p.mu after setting the bit): take the turn back now
	// rather than wait for input that may never come.
	closing := c.closeAsked()
	if closing {
		e.armed = false
	}
	p.mu.Unlock()
	if closing {
		c.queueStep()
	}
	return nil
}

// kick queues a turn of c now if it is waiting for input (a close was
// asked).
func (p *readyPoller) kick(c *conn) {
	p.mu.Lock()
	e := p.conns[c.fd]
	armed := e != nil && e.c == c && e.armed
	if armed {
		e.armed = false
	}
	p.mu.Unlock()
	if armed {
		c.queueStep()
	}
}

// closeAll asks every paused connection to close (Server.stop: the event
// loop's Shutdown does not know them).
func (p *readyPoller) closeAll() {
	p.mu.Lock()
	all := make([]*conn, 0, len(p.conns))
	for _, e := range p.conns {
		all = append(all, e.c)
	}
	p.mu.Unlock()
	for _, c := range all {
		c.closeSocket()
	}
}

// waiting reports whether c waits for input, no turn of it queued.
func (p *readyPoller) waiting(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.conns[c.fd]
	return e != nil && e.c == c && e.armed
}

// forget removes c before its descriptor is closed.
func (p *readyPoller) forget(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.conns[c.fd]
	if e == nil || e.c != c {
		return
	}
	if e.added && !p.stopped {
		_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(c.fd), nil)
	}
	delete(p.conns, c.fd)
}

func (p *readyPoller) run() {
	defer p.closeFDs()
	events := make([]syscall.EpollEvent, readyBatch)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil && err != syscall.EINTR {
			return
		}
		for _, ev := range events[:max(n, 0)] {
			if int(ev.Fd) == p.wake[0] {
				return
			}
			// An event fetched just before its descriptor was closed and
			// reused only queues a turn that finds nothing to read.
			p.mu.Lock()
			e := p.conns[ev.Fd]
			var c *conn
			if e != nil && e.armed {
				e.armed = false
				c = e.c
			}
			p.mu.Unlock()
			if c != nil {
				c.queueStep()
			}
		}
	}
}

// stop ends run; the descriptors close when it returns.
func (p *readyPoller) stop() { _, _ = syscall.Write(p.wake[1], fenceByte) }

// closeFDs closes the poller's descriptors, under p.mu so that no arm or
// forget uses a number that may then belong to another file.
func (p *readyPoller) closeFDs() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	_ = syscall.Close(p.epfd)
	_ = syscall.Close(p.wake[0])
	_ = syscall.Close(p.wake[1])
}
