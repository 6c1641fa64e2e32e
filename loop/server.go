// Package loop is Switchboard's event loop: netpoll integration, the
// handshake, the read path, per-connection outbound queues, and routing
// between binaries and phones through the registry.
package loop

import (
	"switchboard/ratelimit"

	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"

	"switchboard/loop/taskpool"
	"switchboard/loop/wheel"
	"switchboard/registry"
)

// Idle connections are most of the relay's memory. netpoll's defaults give
// each one an 8 KiB input node and a 4 KiB output node; 256-byte nodes
// bring an idle connection to ~4 KB. Larger messages grow
// the nodes on demand.
const netpollNodeSize = 256

// controlSlack lets pongs and the 101 exceed an outbox's budget: they are
// tiny and the peer's own pings are what trigger them.
const controlSlack = 4 << 10

// noticeSlack lets close notices exceed a binary's budget, so a backlogged
// binary still learns which phones left; ~1,000 notices' worth.
const noticeSlack = 64 << 10

// netpollPollers is how many epoll loops netpoll runs: its own default,
// set here so the poller fence (fence.go) knows how many there are.
var netpollPollers = runtime.GOMAXPROCS(0)/20 + 1

func init() {
	netpoll.LinkBufferCap = netpollNodeSize
	cfg := netpoll.Config{
		PollerNum:    netpollPollers,
		LoadBalance:  netpoll.RoundRobin, // the fence relies on it
		BufferSize:   netpollNodeSize,
		LoggerOutput: io.Discard,
		Runner:       runTask,
	}
	if err := netpoll.Configure(cfg); err != nil {
		panic(err)
	}
}

// runTask hands each netpoll read task to its Server's read workers
// (taskpool). netpoll's default pool ends a worker as soon as its queue is
// empty, so under Switchboard's short tasks it spawned a worker per event
// anyway, plus an allocation for the worker's closure. Running tasks inline
// on the poller was measured too: ~40% fewer round trips per second on two
// cores, as one poller then does all the parsing and routing.
func runTask(ctx context.Context, task func()) {
	if c, ok := ctx.(*conn); ok {
		c.srv.tasks.Run(task)
		return
	}
	go task()
}

// Server is one relay: a netpoll event loop and the registry it routes by.
type Server struct {
	cfg          Config
	log          *slog.Logger
	reg          *registry.Registry[*conn, *conn]
	counters     Counters
	live         atomic.Int64 // upgraded connections still open
	draining     atomic.Bool  // Shutdown has begun: upgrades are refused
	started      time.Time
	versionJSON  []byte
	tooBigReason string
	evl          netpoll.EventLoop
	limiter      *ratelimit.Limiter[[16]byte] // per source IP; nil when the rate limit is off
	wheel        *wheel.Wheel[*conn]
	tasks        *taskpool.Pool
	pauser       readPauser
	ready        *readyPoller // paused sockets waiting for input (readypoll.go)
	budget       *memoryBudget
	congestion   congestion   // phones waiting for their binary's outbox to drain
	frozen       atomic.Bool  // a live upgrade's handover: nothing reads, times out or is admitted (handover.go)
	handedOff    atomic.Bool  // the registered connections belong to a successor now
	admitting    atomic.Int32 // upgrades between the admission check and registry decision
	freeze       freezeState
}

// New builds a relay from cfg after filling defaults and validating it.
func New(cfg Config) (*Server, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	version, _ := json.Marshal(cfg.Version)
	s := &Server{
		cfg:          cfg,
		log:          log,
		reg:          registry.New[*conn, *conn](cfg.PhonesPerServer),
		started:      time.Now(),
		versionJSON:  version,
		tooBigReason: tooBigText(cfg.MaxMessageBytes),
		limiter:      ratelimit.New[[16]byte](cfg.RateLimitBurst, cfg.RateLimitInterval, cfg.RateLimitMaxSources),
	}
	// Before the event loop accepts anything, so the fence's pairs land one
	// on each poller.
	f, err := sharedFence()
	if err != nil {
		return nil, err
	}
	s.pauser = detachPauser{fence: f}
	if s.ready, err = newReadyPoller(); err != nil {
		return nil, err
	}
	s.budget = newMemoryBudget(cfg.MemoryBudgetBytes, &s.counters)
	s.tasks = taskpool.New(cfg.ReadWorkers, cfg.ReadQueueDepth, cfg.ReadStallAfter)
	// No netpoll write timeout: the writers never use netpoll's output
	// buffer (outbox.go) and bound their own waits.
	evl, err := netpoll.NewEventLoop(s.onRequest, netpoll.WithOnPrepare(s.onPrepare))
	if err != nil {
		s.tasks.Stop(0)
		s.ready.stop()
		return nil, err
	}
	s.evl = evl
	s.wheel = wheel.New[*conn](wheel.Tick(cfg.HeartbeatInterval, cfg.PongTimeout, cfg.HandshakeTimeout,
		cfg.MessageReadTimeout, cfg.GracePeriod, cfg.TakeoverTimeout, cfg.CloseLinger, cfg.BinaryMaxLifetime))
	go s.wheel.Run()
	return s, nil
}

// Serve accepts connections on ln until Shutdown. It blocks. ln is a TCP
// or a unix listener; on a unix one every client's address must come from
// a PROXY header (Config.ProxyProtocol), since the socket has none.
func (s *Server) Serve(ln net.Listener) error { return s.evl.Serve(ln) }

// Counters exposes the relay's running tallies.
func (s *Server) Counters() *Counters { return &s.counters }

// Binaries is the number of server-ids held by a connected binary.
func (s *Server) Binaries() int { return s.reg.Binaries() }

// Phones is the number of attached phones.
func (s *Server) Phones() int { return s.reg.Phones() }

// Live is the number of upgraded connections still open.
func (s *Server) Live() int { return int(s.live.Load()) }

// Config returns the configuration in effect, defaults filled in.
func (s *Server) Config() Config { return s.cfg }

func (s *Server) onPrepare(nc netpoll.Connection) context.Context {
	c := &conn{srv: s, nc: nc}
	if fd, ok := socketFD(nc); ok {
		c.fd = int32(fd)
		// netpoll accepts without SOCK_CLOEXEC: a process this one starts
		// (a live upgrade's successor) would otherwise inherit the socket
		// and hold it open after this relay closed it. cmd/switchboard's
		// listener also sets it at accept, under syscall.ForkLock, which
		// closes the window between accept and here.
		syscall.CloseOnExec(fd)
	}
	switch ra := nc.RemoteAddr().(type) {
	case *net.TCPAddr:
		ap := ra.AddrPort()
		c.src, c.srcPort = ap.Addr().Unmap(), ap.Port()
	case *net.UnixAddr:
		c.src = unixPeer
	}
	c.out.init(c, s.cfg.PhoneOutboxBytes)
	_ = nc.AddCloseCallback(c.onClosed)
	c.setDeadline(&c.headDue, c.wheelNow()+int64(s.cfg.HandshakeTimeout))
	return c
}

// unixPeer is the address a unix socket's peer stands as until a PROXY
// header names the client: the peer is on this box, as a balancer
// connecting over loopback TCP would be. A LOCAL header (HAProxy's health
// checks) leaves it, so those share one rate-limit bucket, as they do over
// TCP from one balancer address (docs/deployment.md, "Balancer and relay
// on one box: a unix socket").
var unixPeer = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// socketFD is the descriptor under nc, or false where netpoll gives none.
func socketFD(nc netpoll.Connection) (int, bool) {
	fc, ok := nc.(interface{ Fd() int })
	if !ok {
		return 0, false
	}
	return fc.Fd(), true
}

func (s *Server) logClose(c *conn, why CloseReason, code uint16) {
	if !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	s.log.Debug("closing", "role", c.role, "reason", why.String(), "code", code, c.addrs())
}
