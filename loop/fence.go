package loop

import (
	"context"
	"fmt"
	"sync"
	"syscall"

	"github.com/cloudwego/netpoll"
)

// pollerFence tells when every netpoll poller has finished the events it
// fetched before some moment. Why it is needed: a poller handles one batch
// of epoll events at a time, and a batch fetched just before a connection
// left epoll can still read from that connection's socket into its input
// buffer after the connection's close callback began. Those bytes would be
// freed with the buffer, and the stream would lose them (docs/architecture.md,
// "Read backpressure").
//
// The fence is one socket pair per poller, whose near end netpoll polls like
// any connection. wait writes a byte to each far end and returns once each
// near end's read task has run: that poller has then fetched a new batch
// after the write, so it has finished every batch fetched before it.
//
// Rounds are shared: every caller waits for the first round that starts
// after its call, so many connections pausing at once (a flood of phones)
// cost one round, not one each.
type pollerFence struct {
	pairs []fencePair

	mu      sync.Mutex
	turn    sync.Cond // signalled when a round ends
	started uint64    // rounds started
	done    uint64    // rounds finished
}

type fencePair struct {
	far  int           // the end the fence writes to
	seen chan struct{} // the near end's read task ran
}

var fenceByte = []byte{1}

// newPollerFence creates one pair per poller. netpoll hands pollers to new
// connections round robin, so pollers consecutive connections, created
// before the relay accepts any, land one on each poller.
func newPollerFence(pollers int) (*pollerFence, error) {
	f := &pollerFence{}
	f.turn.L = &f.mu
	for range pollers {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("poller fence: %w", err)
		}
		nc, err := netpoll.NewFDConnection(fds[0])
		if err != nil {
			return nil, fmt.Errorf("poller fence: %w", err)
		}
		p := fencePair{far: fds[1], seen: make(chan struct{}, 1)}
		err = nc.SetOnRequest(func(_ context.Context, nc netpoll.Connection) error {
			r := nc.Reader()
			_ = r.Skip(r.Len())
			select {
			case p.seen <- struct{}{}:
			default:
			}
			return r.Release()
		})
		if err != nil {
			return nil, fmt.Errorf("poller fence: %w", err)
		}
		f.pairs = append(f.pairs, p)
	}
	return f, nil
}

// wait returns once every poller has finished the batch it was handling
// when wait was called.
func (f *pollerFence) wait() {
	f.mu.Lock()
	defer f.mu.Unlock()
	// A round in progress began before this call and proves nothing for
	// it: the first round that can is the next one to start.
	need := f.started + 1
	for f.done < need {
		if f.started == f.done { // no round running: run one
			f.started++
			f.mu.Unlock()
			f.round()
			f.mu.Lock()
			f.done++
			f.turn.Broadcast()
			continue
		}
		f.turn.Wait()
	}
}

// round writes a byte to every pair and waits until each poller has seen
// its own.
func (f *pollerFence) round() {
	for _, p := range f.pairs {
		for {
			_, err := syscall.Write(p.far, fenceByte)
			if err != syscall.EINTR {
				break
			}
		}
	}
	for _, p := range f.pairs {
		<-p.seen
	}
}

// The fence is process-wide, as netpoll's pollers are.
var (
	fenceOnce sync.Once
	fence     *pollerFence
	fenceErr  error
)

func sharedFence() (*pollerFence, error) {
	fenceOnce.Do(func() { fence, fenceErr = newPollerFence(netpollPollers) })
	return fence, fenceErr
}
