package main

import (
	"os"
	"strings"

	"switchboard/internal/kmem"
)

// kernelSnap is what the kernel says about its memory and sockets at one
// moment. Every figure is machine-wide: another process opening sockets
// meanwhile shows up here too, which is why a run checks the socket count
// it added against the count it expects.
type kernelSnap struct {
	slab, sunreclaim int64            // /proc/meminfo, bytes
	caches           map[string]int64 // /proc/slabinfo: active objects × object size, bytes
	objSize          map[string]int64 // /proc/slabinfo: object size
	tcpInuse         int64            // /proc/net/sockstat TCP inuse
	tcpTW            int64            // TIME_WAIT sockets (others' churn)
	socketsUsed      int64            // every socket, unix ones included
}

// tcpCaches and unixCaches hold what only one kind of socket allocates;
// the rest of a socket's slab (inode, dentry, file, epoll item, kmalloc)
// is shared by both kinds and split evenly over all the sockets added.
// The kernel merges caches of one size and flags, and /proc/slabinfo then
// lists the group under one of its names (UNIX under signal_cache, say):
// slabName finds it.
var (
	tcpCaches  = []string{"TCP", "TCPv6"}
	unixCaches = []string{"UNIX", "UNIX-STREAM"}
	// sharedCaches are the rest of what a socket allocates: its inode,
	// dentry and file, its epoll item, small kmalloc'd parts. Matched by
	// prefix. Every other cache is the box's other work (inodes of files
	// touched, processes started) and left out of the per-socket figure;
	// meminfo's Slab, which has it all, is reported beside it.
	sharedCaches = []string{"sock_inode_cache", "dentry", "filp", "eventpoll_", "ep_head", "lsm_file_cache",
		"kmalloc-", "skbuff_", "request_sock_TCP", "tcp_bind"}
	// twCache grows and shrinks with other processes' closed connections
	// (TIME_WAIT): its change is taken out of the slab delta.
	twCache = "tw_sock_TCP"
)

// slabName is the name /proc/slabinfo lists cache under: its own, or that
// of the merged group it belongs to.
func slabName(cache string, listed map[string]int64) string {
	if _, ok := listed[cache]; ok {
		return cache
	}
	target, err := os.Readlink("/sys/kernel/slab/" + cache)
	if err != nil {
		return cache
	}
	for name := range listed {
		if t, err := os.Readlink("/sys/kernel/slab/" + name); err == nil && t == target {
			return name
		}
		if "/sys/kernel/slab/"+name == target || name == strings.TrimPrefix(target, ":") {
			return name
		}
	}
	return cache
}

// socketCache says whether a slabinfo cache is part of what a socket costs.
func socketCache(name string, specific map[string]bool) bool {
	if specific[name] {
		return true
	}
	for _, p := range sharedCaches {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func readKernel() (kernelSnap, error) {
	var k kernelSnap
	var err error
	if k.slab, err = kmem.Meminfo("Slab"); err != nil {
		return k, err
	}
	if k.sunreclaim, err = kmem.Meminfo("SUnreclaim"); err != nil {
		return k, err
	}
	si, _, err := kmem.ReadSlabinfo() // without root: no per-cache split, the totals stand
	if err != nil {
		return k, err
	}
	k.caches, k.objSize = si.Active, si.ObjSize
	ss, err := kmem.ReadSockstat()
	if err != nil {
		return k, err
	}
	k.socketsUsed, k.tcpInuse, k.tcpTW = ss.Used, ss.TCPInuse, ss.TCPTimeWait
	return k, nil
}
