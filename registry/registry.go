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
	phones []phoneEntry[P]
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

// Claim records b as the holder of serverID, or returns ErrClaimed when
// another binary holds it.
func (r *Registry[B, P]) Claim(serverID string, b B) error {
	s := r.shard(serverID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[serverID]; sl != nil {
		return ErrClaimed
	}
	s.slots[serverID] = &slot[B, P]{binary: b}
	r.binaries.Add(1)
	return nil
}

// Release removes serverID's slot if b still holds it, appending the phones
// that were attached to dst for the caller to close. It returns dst
// unchanged when b is not the holder (a newer binary owns the slot).
func (r *Registry[B, P]) Release(serverID string, b B, dst []P) []P {
	s := r.shard(serverID)
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[serverID]
	if sl == nil || sl.binary != b {
		return dst
	}
	delete(s.slots, serverID)
	r.binaries.Add(-1)
	r.phones.Add(-int64(len(sl.phones)))
	for _, pe := range sl.phones {
		dst = append(dst, pe.phone)
	}
	return dst
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

// Binary returns the binary holding serverID.
func (r *Registry[B, P]) Binary(serverID string) (b B, ok bool) {
	s := r.shard(serverID)
	s.mu.RLock()
	sl := s.slots[serverID]
	if sl != nil {
		b, ok = sl.binary, true
	}
	s.mu.RUnlock()
	return b, ok
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

// Binaries is the number of server-ids held by a binary.
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

func newConnID(serverID string) string {
	var raw [4]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails on Linux
	var hexed [8]byte
	hex.Encode(hexed[:], raw[:])
	return "client-" + serverID + "-" + string(hexed[:])
}
