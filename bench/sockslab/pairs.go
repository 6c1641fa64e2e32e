package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// kind is one way a balancer reaches a relay on the same box.
type kind struct {
	name string
	open func(n int, epoll bool) (*pairSet, error)
}

var (
	tcpKind  = kind{"tcp", openTCP}
	unixKind = kind{"unix", openUnix}
)

// pairSet holds the connections of one run: raw descriptors, so no Go
// runtime poller registers them behind the measurement's back.
type pairSet struct {
	fds     []int
	epfd    int
	cleanup func()
}

func (s *pairSet) close() {
	for _, fd := range s.fds {
		_ = syscall.Close(fd)
	}
	if s.epfd > 0 {
		_ = syscall.Close(s.epfd)
	}
	if s.cleanup != nil {
		s.cleanup()
	}
}

// add keeps fd and, with an epoll set, registers it there.
func (s *pairSet) add(fd int) error {
	s.fds = append(s.fds, fd)
	if s.epfd <= 0 {
		return nil
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd)}
	return syscall.EpollCtl(s.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
}

func newSet(epoll bool) (*pairSet, error) {
	s := &pairSet{epfd: -1}
	if epoll {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return nil, err
		}
		s.epfd = fd
	}
	return s, nil
}

// openTCP opens n loopback TCP connections to a listener of its own. Every
// socket lingers 0 at close: the run ends with resets, not n TIME_WAIT
// entries that would expire (and shrink the slab) during the next run.
func openTCP(n int, epoll bool) (*pairSet, error) {
	s, err := newSet(epoll)
	if err != nil {
		return nil, err
	}
	ln, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		s.close()
		return nil, err
	}
	s.cleanup = func() { syscall.Close(ln) }
	lo := &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if err := syscall.Bind(ln, lo); err != nil {
		s.close()
		return nil, err
	}
	if err := syscall.Listen(ln, 128); err != nil {
		s.close()
		return nil, err
	}
	sa, err := syscall.Getsockname(ln)
	if err != nil {
		s.close()
		return nil, err
	}
	linger := &syscall.Linger{Onoff: 1, Linger: 0}
	err = connectAll(s, n, ln, syscall.AF_INET, sa, func(fd int) error {
		return syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, linger)
	})
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// openUnix opens n connections to a unix listener bound to a path, as
// HAProxy reaches the relay's --listen unix:/path.
func openUnix(n int, epoll bool) (*pairSet, error) {
	s, err := newSet(epoll)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "sockslab-")
	if err != nil {
		s.close()
		return nil, err
	}
	ln, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		os.RemoveAll(dir)
		s.close()
		return nil, err
	}
	s.cleanup = func() {
		syscall.Close(ln)
		os.RemoveAll(dir)
	}
	sa := &syscall.SockaddrUnix{Name: filepath.Join(dir, "relay.sock")}
	if err := syscall.Bind(ln, sa); err != nil {
		s.close()
		return nil, err
	}
	if err := syscall.Listen(ln, 128); err != nil {
		s.close()
		return nil, err
	}
	if err := connectAll(s, n, ln, syscall.AF_UNIX, sa, nil); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// connectAll connects n sockets of family to ln at sa, one at a time, and
// accepts each: the client end and the accepted end are both kept.
func connectAll(s *pairSet, n, ln, family int, sa syscall.Sockaddr, each func(fd int) error) error {
	for i := range n {
		c, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket %d of %d: %w", i+1, n, err)
		}
		if err := syscall.Connect(c, sa); err != nil {
			syscall.Close(c)
			return fmt.Errorf("connect %d of %d: %w", i+1, n, err)
		}
		a, _, err := syscall.Accept4(ln, syscall.SOCK_CLOEXEC)
		if err != nil {
			syscall.Close(c)
			return fmt.Errorf("accept %d of %d: %w", i+1, n, err)
		}
		for _, fd := range []int{c, a} {
			if each != nil {
				if err := each(fd); err != nil {
					return err
				}
			}
			if err := s.add(fd); err != nil {
				return err
			}
		}
	}
	return nil
}
