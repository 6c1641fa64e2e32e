package loop

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"switchboard/registry"
)

// Connection handover for a live upgrade (docs/architecture.md, "Upgrade
// handover"). The old process freezes: no upgrade is admitted (503), no
// timer acts, every registered connection's socket leaves netpoll through
// the read pause (pause.go) with all input netpoll held staged, and a
// paused turn that comes up is parked on the freeze instead of reading.
// Writers finish what is queued. Then nothing reads, writes or times out
// any registered connection, and Snapshot describes each one: its socket
// (whose descriptor the caller passes on), its registry place, the input
// it read but did not parse and its deadlines as time remaining. Thaw
// rolls back (every parked turn runs, the connections are read on the
// paused path from then on); Release gives the connections up once the
// successor serves them. Adopt is the successor's side.

// handoverRecheck is how often a frozen relay looks whether every
// connection has gone quiet, and how soon a timer that came due while
// frozen looks again: short against the pause the peers see.
const handoverRecheck = time.Millisecond

// HandedConn is one connection's state in a handover. Times are
// nanoseconds remaining (0: not set); a binary in its grace window has no
// socket (FD false) and only Grace.
type HandedConn struct {
	Role     string `json:"role"` // "binary" or "phone"
	ServerID string `json:"server_id"`
	ConnID   string `json:"conn_id,omitempty"`
	FD       bool   `json:"fd"` // a descriptor rides along, in record order
	Src      string `json:"src,omitempty"`
	SrcPort  uint16 `json:"src_port,omitempty"`
	Stage    []byte `json:"stage,omitempty"` // read, not yet parsed
	Msg      []byte `json:"msg,omitempty"`   // a fragmented message's data so far
	Frag     bool   `json:"frag,omitempty"`  // a fragmented message is being reassembled
	MsgDue   int64  `json:"msg_due,omitempty"`
	PingDue  int64  `json:"ping_due,omitempty"`
	PongDue  int64  `json:"pong_due,omitempty"`
	LifeDue  int64  `json:"life_due,omitempty"`
	Grace    int64  `json:"grace,omitempty"`
}

// Handover is a frozen relay's connections, between Freeze and Thaw or
// Release.
type Handover struct {
	s       *Server
	conns   []*conn // the ones with a socket, in Records order among FD records
	Records []HandedConn
	FDs     []int // the sockets, one per FD record; still this process's
	// Paused is when the last connection stopped reading.
	Paused time.Time
}

// freezeState is the Server's side of a freeze.
type freezeState struct {
	mu      sync.Mutex
	parked  map[*conn]struct{} // turns that came up while frozen
	adopted []*conn            // in a successor: adopted, not read until ResumeAdopted
}

// Freeze stops every registered connection and snapshots it. It gives up
// (and thaws) at deadline, when a takeover probe is in flight, or when a
// connection is closing: retry later.
func (s *Server) Freeze(deadline time.Time) (*Handover, error) {
	if s.draining.Load() {
		return nil, errors.New("the relay is draining")
	}
	s.freeze.mu.Lock()
	s.freeze.parked = make(map[*conn]struct{})
	s.freeze.mu.Unlock()
	s.frozen.Store(true)
	h := &Handover{s: s}
	fail := func(err error) (*Handover, error) {
		s.thaw()
		return nil, err
	}
	for s.admitting.Load() != 0 { // an upgrade past the check registers first
		if time.Now().After(deadline) {
			return fail(errors.New("an upgrade under way did not finish in time"))
		}
		time.Sleep(handoverRecheck)
	}
	if s.reg.HasWaiting() {
		return fail(errors.New("a takeover probe is in flight"))
	}
	bins, phones := s.reg.Each(nil, nil)
	all := append(bins, phones...)
	var live []*conn
	for _, c := range all {
		if c.gone.Load() {
			continue // a grace holder: no socket
		}
		if c.state.closing.Load() {
			return fail(fmt.Errorf("a %s connection is closing", c.role))
		}
		h.conns = append(h.conns, c)
		if c.sock.CompareAndSwap(sockLive, sockPausing) {
			live = append(live, c)
		}
	}
	if stuck := s.detachAll(live); stuck != nil {
		return fail(fmt.Errorf("a %s connection could not stop reading", stuck.role))
	}
	for !s.quiet(h.conns) {
		if time.Now().After(deadline) {
			return fail(errors.New("connections did not go quiet in time (a peer not reading what is queued for it?)"))
		}
		time.Sleep(handoverRecheck)
	}
	h.Paused = time.Now()
	if s.reg.HasWaiting() {
		return fail(errors.New("a takeover probe started during the freeze"))
	}
	now := s.wheel.At(time.Now())
	left := func(at int64) int64 {
		if at == 0 {
			return 0
		}
		return max(at-now, 1)
	}
	for _, c := range bins {
		if c.gone.Load() {
			h.Records = append(h.Records, HandedConn{Role: "binary", ServerID: c.serverID, Grace: left(c.graceDue.Load())})
		}
	}
	for _, c := range h.conns {
		r := HandedConn{Role: c.role.String(), ServerID: c.serverID, ConnID: c.connID, FD: true,
			SrcPort: c.srcPort, Frag: c.msg != nil,
			MsgDue: left(c.msgDue.Load()), PingDue: left(c.pingDue.Load()), PongDue: left(c.pongDue.Load()), LifeDue: left(c.lifeDue.Load())}
		if c.src.IsValid() {
			r.Src = c.src.String()
		}
		if c.stage != nil {
			r.Stage = append([]byte(nil), c.stage.B...)
		}
		if c.msg != nil {
			r.Msg = append([]byte(nil), c.msg.B...)
		}
		h.Records = append(h.Records, r)
		h.FDs = append(h.FDs, int(c.fd))
	}
	return h, nil
}

// freezeDetachers is how many goroutines take sockets out of netpoll at
// once: each Detach whose close callback runs on the caller waits for a
// poller fence round (fence.go), and concurrent waits share one round, so
// 1,000 sockets cost tens of rounds, not 1,000.
const freezeDetachers = 32

// detachAll takes every socket of live (each marked sockPausing) out of
// netpoll through the read pause; it returns a connection that could not
// be, restored to netpoll's reading.
func (s *Server) detachAll(live []*conn) (stuck *conn) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := 0
	for range min(freezeDetachers, len(live)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next == len(live) {
					mu.Unlock()
					return
				}
				c := live[next]
				next++
				mu.Unlock()
				if !s.pauser.stop(c, c.nc) {
					c.sock.Store(sockLive)
					mu.Lock()
					stuck = c
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return stuck
}

// quiet reports whether none of conns can read, write or be closed any
// more: each is paused with its turn parked on the freeze or waiting for
// input, its outbox empty and idle, and not closing.
func (s *Server) quiet(conns []*conn) bool {
	for _, c := range conns {
		if c.sock.Load() != sockPaused || c.state.closing.Load() || c.state.park.Load() != parkNone {
			return false
		}
		c.out.mu.Lock()
		idle := c.out.queue == nil && !c.out.running
		c.out.mu.Unlock()
		if !idle {
			return false
		}
		s.freeze.mu.Lock()
		_, parked := s.freeze.parked[c]
		s.freeze.mu.Unlock()
		if !parked && !s.ready.waiting(c) {
			return false
		}
	}
	return true
}

// parkTurn keeps a paused turn that came up while frozen, for Thaw. It
// reports false when the relay is not frozen and the turn should run.
func (s *Server) parkTurn(c *conn) bool {
	if !s.frozen.Load() {
		return false
	}
	s.freeze.mu.Lock()
	defer s.freeze.mu.Unlock()
	if s.freeze.parked == nil {
		return false // thawed meanwhile
	}
	s.freeze.parked[c] = struct{}{}
	return true
}

// Thaw rolls a freeze back: the relay serves its connections again, now
// all on the paused path (readypoll.go), and admits upgrades.
func (h *Handover) Thaw() { h.s.thaw() }

func (s *Server) thaw() {
	s.freeze.mu.Lock()
	parked := s.freeze.parked
	s.freeze.parked = nil
	s.frozen.Store(false)
	s.freeze.mu.Unlock()
	for c := range parked {
		c.queueStep()
	}
}

// Release gives up the handed-over connections once the successor serves
// them: each leaves the read side and the memory budget, its descriptor
// (the successor holds its own copy) is closed, and nothing this process
// still does (Shutdown included) touches its socket or its registry slot.
func (h *Handover) Release() {
	s := h.s
	s.handedOff.Store(true)
	for _, c := range h.conns {
		s.ready.forget(c)
		s.budget.forget(c)
		c.sock.Store(sockHanded)
		c.out.mu.Lock()
		c.out.state = outboxClosed
		c.out.mu.Unlock()
		c.out.wmu.Lock()
		c.out.wclosed = true
		c.out.wmu.Unlock()
		c.gone.Store(true)
		c.releaseInput()
		s.counters.PausedNow.Add(-1)
		s.live.Add(-1)
		_ = syscall.Close(int(c.fd))
	}
	bins, _ := s.reg.Each(nil, nil)
	for _, c := range bins {
		c.graceDue.Store(0) // the successor's to expire now
	}
}

// Adopt is the successor's side: it takes the connections of records,
// whose sockets are fds (one per FD record, in order), rebuilding the
// registry and the deadlines; ResumeAdopted then starts reading each (its
// staged input first). Call it before Serve. On an error nothing is served
// and the caller closes fds.
func (s *Server) Adopt(records []HandedConn, fds []int) (int, error) {
	now := s.wheel.At(time.Now())
	at := func(left int64) int64 {
		if left == 0 {
			return 0
		}
		return now + left
	}
	type adopted struct {
		c *conn
		r *HandedConn
	}
	var conns []adopted
	next := 0
	for i := range records {
		r := &records[i]
		if !r.FD {
			continue
		}
		if next >= len(fds) {
			return 0, fmt.Errorf("handover: %d records name a socket, %d sockets came", next+1, len(fds))
		}
		c := &conn{srv: s, fd: int32(fds[next]), serverID: r.ServerID, connID: r.ConnID, srcPort: r.SrcPort, upgraded: true, proxied: true}
		next++
		switch r.Role {
		case "binary":
			c.role = roleBinary
			c.out.init(c, s.cfg.BinaryOutboxBytes)
			c.out.fanIn = true
		case "phone":
			c.role = rolePhone
			c.out.init(c, s.cfg.PhoneOutboxBytes)
		default:
			return 0, fmt.Errorf("handover: a connection with role %q", r.Role)
		}
		if r.Src != "" {
			if a, err := netip.ParseAddr(r.Src); err == nil {
				c.src = a
			}
		}
		conns = append(conns, adopted{c, r})
	}
	// Binaries first: phones attach to their slots.
	for i := range records {
		r := &records[i]
		if r.FD || r.Role != "binary" {
			continue
		}
		g := &conn{srv: s, role: roleBinary, serverID: r.ServerID, upgraded: true, detached: true}
		g.gone.Store(true)
		if _, _, err := s.reg.Claim(r.ServerID, g, nil); err != nil {
			return 0, fmt.Errorf("handover: grace slot %s: %v", r.ServerID, err)
		}
		_, gen, _ := s.reg.Release(r.ServerID, g, true, moves{})
		g.graceGen = gen
		g.setDeadline(&g.graceDue, at(r.Grace))
	}
	for _, a := range conns {
		if a.c.role != roleBinary {
			continue
		}
		if _, _, err := s.reg.Claim(a.c.serverID, a.c, nil); err != nil {
			return 0, fmt.Errorf("handover: binary %s: %v", a.c.serverID, err)
		}
	}
	for _, a := range conns {
		if a.c.role != rolePhone {
			continue
		}
		b, err := s.reg.RestorePhone(a.c.serverID, a.c.connID, a.c)
		if err != nil {
			return 0, fmt.Errorf("handover: phone of %s: %v", a.c.serverID, err)
		}
		a.c.binary = b
		a.c.serverID = registry.ServerIDOf(a.c.connID) // shares the conn_id's bytes, as register does
	}
	for _, a := range conns {
		c, r := a.c, a.r
		if len(r.Stage) > 0 {
			c.stage = stagePool.Get()
			c.stage.B = append(c.stage.B, r.Stage...)
			s.counters.StagedBytes.Add(int64(len(r.Stage)))
		}
		if r.Frag {
			c.msg = msgPool.Get()
			c.msg.B = append(c.msg.B, r.Msg...)
			s.counters.StagedBytes.Add(int64(len(r.Msg)))
		}
		for _, d := range []struct {
			due  *atomic.Int64
			left int64
		}{{&c.msgDue, r.MsgDue}, {&c.pingDue, r.PingDue}, {&c.pongDue, r.PongDue}, {&c.lifeDue, r.LifeDue}} {
			if d.left != 0 {
				c.setDeadline(d.due, at(d.left))
			}
		}
		syscall.CloseOnExec(int(c.fd))
		c.sock.Store(sockPaused)
		s.live.Add(1)
		s.counters.PausedNow.Add(1)
		s.ready.track(c)
		s.budget.watch(c)
		c.noteInputHeld()
	}
	s.freeze.mu.Lock()
	for _, a := range conns {
		s.freeze.adopted = append(s.freeze.adopted, a.c)
	}
	s.freeze.mu.Unlock()
	return len(conns), nil
}

// ResumeAdopted starts reading the connections Adopt took. Adopt reads
// nothing, so that a successor that fails before its predecessor has let
// go of the connections (READY answered, the release not yet come) has
// consumed no byte of them: the predecessor's rollback then finds every
// stream where it left it. Call it once the predecessor has released them.
func (s *Server) ResumeAdopted() {
	s.freeze.mu.Lock()
	adopted := s.freeze.adopted
	s.freeze.adopted = nil
	s.freeze.mu.Unlock()
	for _, c := range adopted {
		c.queueStep()
	}
}
