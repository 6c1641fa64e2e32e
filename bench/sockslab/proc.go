package main

import "switchboard/internal/kmem"

// slab is the kernel's slab memory at one moment.
type slab struct {
	total  int64            // /proc/meminfo Slab, bytes
	caches map[string]int64 // all objects × object size by cache; empty without /proc/slabinfo
}

func readSlab() (slab, error) {
	total, err := kmem.Meminfo("Slab")
	if err != nil {
		return slab{}, err
	}
	si, _, err := kmem.ReadSlabinfo()
	if err != nil {
		return slab{}, err
	}
	return slab{total: total, caches: si.Total}, nil
}

// sockstat is /proc/net/sockstat's counts (this network namespace's):
// sockets in use, every family, and TCP TIME_WAIT entries.
type sockstat struct{ sockets, tw int }

func readSockstat() (sockstat, error) {
	s, err := kmem.ReadSockstat()
	return sockstat{sockets: int(s.Used), tw: int(s.TCPTimeWait)}, err
}
