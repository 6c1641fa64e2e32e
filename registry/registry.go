// Package registry is Switchboard's routing table: which binary holds a
// server-id and which phones are attached to it. It is a passive store: it
// performs no I/O and never calls back, so the event loop decides what to
// send and when. Server-ids are spread over shards, each with its own lock,
// so lookups for different server-ids rarely contend.
package registry

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// Refusals, each mapped by the relay to a close code after the 101.
var (
	ErrClaimed     = errors.New("registry: server-id already claimed")
	ErrNoServer    = errors.New("registry: no server with that id")
	ErrPhonesAtCap = errors.New("registry: too many phones for server-id")
)

// shardCount spreads server-ids over this many locks. 64 keeps the chance
// that two of a 16-thread box's loops hit one shard at once small, for 64
// mutexes and maps of fixed overhead.
const shardCount = 64

// Registry maps server-ids to the binary holding each and its phones. B and P
// are the relay's connection handles; their zero values mean "none".
type Registry[B, P comparable] struct {
	seed      maphash.Seed
	maxPhones int
	shards    [shardCount]shard[B, P]
	binaries  atomic.Int64
	phones    atomic.Int64
}

type shard[B, P comparable] struct {
	mu    sync.RWMutex
	slots map[string]*slot[B, P]
}

type slot[B, P comparable] struct {
	binary B
	live   bool   // false while the slot waits out its binary's grace window
	gen    uint64 // bumped whenever the holder changes or leaves: stale timers compare it
	phones []phoneEntry[P]
	// waiting are the claimants queued behind the live holder while it is
	// probed, first come first. Kept here, under the shard lock, so a claim
	// and the holder's departure are ordered: a claimant either queues while
	// the holder is live (and the departure hands it the slot) or finds the
	// slot in grace (and reclaims it). Empty whenever the slot is not live.
	waiting []B
}

// Moves is what a change of holder asks of the caller: the registry performs
// no I/O, so the relay carries these out. Evicted and Refused are appended
// to whatever the caller passed in.
type Moves[B, P comparable] struct {
	Winner  B   // the waiting claimant that now holds the slot; the zero B when none
	Refused []B // the other waiting claimants, answered "claimed": the slot has a live holder
	Evicted []P // the previous holder's phones, for the caller to close
}

type phoneEntry[P comparable] struct {
	connID string
	phone  P
}

// New returns an empty registry allowing maxPhones phones per server-id.
func New[B, P comparable](maxPhones int) *Registry[B, P] {
	r := &Registry[B, P]{seed: maphash.MakeSeed(), maxPhones: maxPhones}
	for i := range r.shards {
		r.shards[i].slots = make(map[string]*slot[B, P])
	}
	return r
}

func (r *Registry[B, P]) shard(serverID string) *shard[B, P] {
	return &r.shards[maphash.String(r.seed, serverID)%shardCount]
}

// Claim records b as the holder of serverID. A slot waiting out its grace
// window is reclaimed at once: its phones are appended to evicted for the
// caller to close, and the departed binary whose window it was comes back
// as holder (the zero B when the slot was free). When a live binary holds
// the slot, Claim returns that holder and ErrClaimed and records nothing;
// ClaimOrWait queues b instead.
func (r *Registry[B, P]) Claim(serverID string, b B, evicted []P) ([]P, B, error) {
	evicted, holder, _, err := r.claim(serverID, b, false, evicted)
	return evicted, holder, err
}

// ClaimOrWait is Claim, except that when a live binary holds the slot b is
// queued behind it and ErrClaimed comes back with that holder. b's claim is
// then decided by whichever comes first: Keep (the holder proved alive),
// Takeover (it did not), the holder's Release (it left; b may get the slot),
// b's own Withdraw, or TakeWaiting. probe is true when b is the first in the
// queue: the caller starts the probe of the holder.
func (r *Registry[B, P]) ClaimOrWait(serverID string, b B, evicted []P) (_ []P, holder B, probe bool, err error) {
	return r.claim(serverID, b, true, evicted)
}

func (r *Registry[B, P]) claim(serverID string, b B, wait bool, evicted []P) (_ []P, holder B, probe bool, err error) {
	s := r.shard(serverID)
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[serverID]
	switch {
	case sl == nil:
		s.slots[serverID] = &slot[B, P]{binary: b, live: true}
	case sl.live:
		if wait {
			probe = len(sl.waiting) == 0
			sl.waiting = append(sl.waiting, b)
		}
		return evicted, sl.binary, probe, ErrClaimed
	default: // reclaim within grace
		evicted = sl.takePhones(r, evicted)
		holder = sl.binary
		sl.binary, sl.live = b, true
		sl.gen++
	}
	r.binaries.Add(1)
	return evicted, holder, false, nil
}

// Keep answers the claimants waiting on holder: it is alive and keeps
// serverID. They are appended to refused. Nothing happens when holder no
// longer holds serverID: whoever moved the slot answered them.
func (r *Registry[B, P]) Keep(serverID string, holder B, refused []B) []B {
	s := r.shard(serverID)
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[serverID]
	if sl == nil || !sl.live || sl.binary != holder {
		return refused
	}
	return sl.takeWaiting(refused)
}

// Takeover gives serverID to the first claimant waiting on holder, when
// holder still holds it live: m.Winner is set, the other claimants are
// appended to m.Refused and holder's phones to m.Evicted. ok is false, and
// m comes back as it was, when nobody waits or holder no longer holds it.
func (r *Registry[B, P]) Takeover(serverID string, holder B, m Moves[B, P]) (_ Moves[B, P], ok bool) {
	s := r.shard(serverID)
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[serverID]
	if sl == nil || !sl.live || sl.binary != holder || len(sl.waiting) == 0 {
		return m, false
	}
	return sl.handOver(r, m), true
}

// handOver moves a live slot to its first waiting claimant.
func (sl *slot[B, P]) handOver(r *Registry[B, P], m Moves[B, P]) Moves[B, P] {
	// Nothing read from m is stored in the slot: escape analysis would
	// then move the caller's scratch arrays behind m's slices to the heap.
	w := sl.waiting[0]
	m.Winner = w
	m.Evicted = sl.takePhones(r, m.Evicted)
	m.Refused = append(m.Refused, sl.waiting[1:]...)
	clear(sl.waiting)
	sl.waiting = sl.waiting[:0]
	sl.binary = w
	sl.gen++
	return m
}

func (sl *slot[B, P]) takeWaiting(dst []B) []B {
	dst = append(dst, sl.waiting...)
	clear(sl.waiting)
	sl.waiting = sl.waiting[:0]
	return dst
}

// Withdraw takes b, a claimant that is leaving, out of serverID's queue. It
// reports false when b was not queued: its claim was already decided.
func (r *Registry[B, P]) Withdraw(serverID string, b B) bool {
	s := r.shard(serverID)
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[serverID]
	if sl == nil {
		return false
	}
	for i, w := range sl.waiting {
		if w == b {
			last := len(sl.waiting) - 1
			copy(sl.waiting[i:], sl.waiting[i+1:]) // keep first come, first served
			var zero B
			sl.waiting[last] = zero
			sl.waiting = sl.waiting[:last]
			return true
		}
	}
	return false
}

// TakeWaiting empties every slot's queue into dst, one shard at a time;
// shutdown uses it to answer every claimant still waiting on a probe.
func (r *Registry[B, P]) TakeWaiting(dst []B) []B {
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for _, sl := range s.slots {
			dst = sl.takeWaiting(dst)
		}
		s.mu.Unlock()
	}
	return dst
}

// Release is called when b's connection ends. When claimants wait on b,
// the first takes the slot at once (see Takeover: m is filled the same way).
// Otherwise, with grace, b's slot (and its phones) is kept, not live, and the
// returned generation identifies this grace window for Expire; without
// grace the slot goes and its phones are appended to m.Evicted. Nothing
// happens when b is not the holder.
func (r *Registry[B, P]) Release(serverID string, b B, grace bool, m Moves[B, P]) (_ Moves[B, P], gen uint64, held bool) {
	s := r.shard(serverID)
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[serverID]
	if sl == nil || sl.binary != b || !sl.live {
		return m, 0, false
	}
	if len(sl.waiting) > 0 {
		return sl.handOver(r, m), 0, false
	}
	r.binaries.Add(-1)
	if grace {
		sl.live = false
		sl.gen++
		return m, sl.gen, true
	}
	delete(s.slots, serverID)
	m.Evicted = sl.takePhones(r, m.Evicted)
	return m, 0, false
}

// Expire ends the grace window gen of b's slot, appending its phones to dst.
// A window that was reclaimed, taken over or replaced meanwhile has another
// generation and is left alone: a stale timer never evicts a newer holder.
func (r *Registry[B, P]) Expire(serverID string, b B, gen uint64, dst []P) (_ []P, ok bool) {
	s := r.shard(serverID)
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[serverID]
	if sl == nil || sl.live || sl.binary != b || sl.gen != gen {
		return dst, false
	}
	delete(s.slots, serverID)
	return sl.takePhones(r, dst), true
}

func (sl *slot[B, P]) takePhones(r *Registry[B, P], dst []P) []P {
	for i, pe := range sl.phones {
		dst = append(dst, pe.phone)
		sl.phones[i] = phoneEntry[P]{}
	}
	r.phones.Add(-int64(len(sl.phones)))
	sl.phones = sl.phones[:0]
	return dst
}

// Each appends every binary (live or in grace) and every phone, one shard
// at a time; shutdown uses it to reach every registered connection.
func (r *Registry[B, P]) Each(binaries []B, phones []P) ([]B, []P) {
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.RLock()
		for _, sl := range s.slots {
			binaries = append(binaries, sl.binary)
			for _, pe := range sl.phones {
				phones = append(phones, pe.phone)
			}
		}
		s.mu.RUnlock()
	}
	return binaries, phones
}

// AddPhone attaches p to serverID's binary under a fresh conn_id of the form
// client-<serverID>-<8 hex digits>, unique among the slot's live phones.
// It returns the binary p was attached to.
func (r *Registry[B, P]) AddPhone(serverID string, p P) (connID string, b B, err error) {
	s := r.shard(serverID)
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[serverID]
	switch {
	case sl == nil:
		return "", b, ErrNoServer
	case len(sl.phones) >= r.maxPhones:
		return "", b, ErrPhonesAtCap
	}
	for connID == "" || sl.find(connID) >= 0 {
		connID = newConnID(serverID)
	}
	sl.phones = append(sl.phones, phoneEntry[P]{connID, p})
	r.phones.Add(1)
	return connID, sl.binary, nil
}

// RemovePhone detaches p. It returns the binary now holding serverID, or the
// zero B when the slot is gone; the caller compares it with the binary p was
// attached to before telling that binary anything.
func (r *Registry[B, P]) RemovePhone(serverID, connID string, p P) (current B) {
	s := r.shard(serverID)
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[serverID]
	if sl == nil {
		return current
	}
	if i := sl.find(connID); i >= 0 && sl.phones[i].phone == p {
		last := len(sl.phones) - 1
		sl.phones[i] = sl.phones[last]
		sl.phones[last] = phoneEntry[P]{}
		sl.phones = sl.phones[:last]
		r.phones.Add(-1)
	}
	return sl.binary
}

// Binary returns the binary holding serverID and whether it is connected
// (false while the slot waits out its grace window); b is the zero B when no
// binary holds it.
func (r *Registry[B, P]) Binary(serverID string) (b B, live bool) {
	s := r.shard(serverID)
	s.mu.RLock()
	if sl := s.slots[serverID]; sl != nil {
		b, live = sl.binary, sl.live
	}
	s.mu.RUnlock()
	return b, live
}

// Phone returns the phone with connID among serverID's phones, provided b
// still holds serverID: a binary can only ever address its own phones.
func (r *Registry[B, P]) Phone(serverID string, b B, connID []byte) (p P, ok bool) {
	s := r.shard(serverID)
	s.mu.RLock()
	if sl := s.slots[serverID]; sl != nil && sl.binary == b {
		for i := range sl.phones {
			if sl.phones[i].connID == string(connID) { // compared in place, no copy
				p, ok = sl.phones[i].phone, true
				break
			}
		}
	}
	s.mu.RUnlock()
	return p, ok
}

// Binaries is the number of server-ids held by a connected binary (slots in
// their grace window are not counted).
func (r *Registry[B, P]) Binaries() int { return int(r.binaries.Load()) }

// Phones is the number of attached phones.
func (r *Registry[B, P]) Phones() int { return int(r.phones.Load()) }

func (sl *slot[B, P]) find(connID string) int {
	for i := range sl.phones {
		if sl.phones[i].connID == connID {
			return i
		}
	}
	return -1
}

// connIDPrefix and connIDSuffixLen frame a server-id inside a conn_id:
// "client-" + server-id + "-" + 8 hex digits.
const (
	connIDPrefix    = "client-"
	connIDSuffixLen = 1 + 8
)

func newConnID(serverID string) string {
	var raw [4]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails on Linux
	var hexed [8]byte
	hex.Encode(hexed[:], raw[:])
	return connIDPrefix + serverID + "-" + string(hexed[:])
}

// ServerIDOf is the server-id inside a conn_id that AddPhone returned,
// sharing its bytes: a phone that keeps both strings then holds one
// allocation, not two.
func ServerIDOf(connID string) string {
	return connID[len(connIDPrefix) : len(connID)-connIDSuffixLen]
}

// HasWaiting reports whether any claimant waits on a takeover probe. A
// live upgrade's handover waits for none: a probe's outcome is decided by
// timers and pongs the snapshot would have to carry half-done.
func (r *Registry[B, P]) HasWaiting() bool {
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.RLock()
		for _, sl := range s.slots {
			if len(sl.waiting) > 0 {
				s.mu.RUnlock()
				return true
			}
		}
		s.mu.RUnlock()
	}
	return false
}

// RestorePhone attaches p under connID, a conn_id AddPhone handed out in
// the process this one took over from (a live upgrade), so the phone keeps
// the address its binary knows it by. It returns the slot's binary.
func (r *Registry[B, P]) RestorePhone(serverID, connID string, p P) (b B, err error) {
	s := r.shard(serverID)
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[serverID]
	switch {
	case sl == nil:
		return b, ErrNoServer
	case sl.find(connID) >= 0:
		return b, errors.New("registry: conn_id restored twice")
	}
	sl.phones = append(sl.phones, phoneEntry[P]{connID, p})
	r.phones.Add(1)
	return sl.binary, nil
}
