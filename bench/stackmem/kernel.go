package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
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
	if k.slab, err = meminfo("Slab"); err != nil {
		return k, err
	}
	if k.sunreclaim, err = meminfo("SUnreclaim"); err != nil {
		return k, err
	}
	if k.caches, k.objSize, err = slabinfo(); err != nil {
		return k, err
	}
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return k, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "sockets:":
			k.socketsUsed = field(f, "used")
		case len(f) >= 3 && f[0] == "TCP:":
			k.tcpInuse, k.tcpTW = field(f, "inuse"), field(f, "tw")
		}
	}
	return k, nil
}

// field is the number after name in a sockstat line.
func field(f []string, name string) int64 {
	for i := 0; i+1 < len(f); i++ {
		if f[i] == name {
			n, _ := strconv.ParseInt(f[i+1], 10, 64)
			return n
		}
	}
	return 0
}

func meminfo(key string) (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			n, err := strconv.ParseInt(f[0], 10, 64)
			return n * 1024, err // kB
		}
	}
	return 0, fmt.Errorf("/proc/meminfo has no %s", key)
}

// slabinfo reads /proc/slabinfo (root only). Without it the per-cache
// split is missing but the meminfo totals still stand.
func slabinfo() (bytes, objSize map[string]int64, err error) {
	f, err := os.Open("/proc/slabinfo")
	if err != nil {
		return map[string]int64{}, map[string]int64{}, nil
	}
	defer f.Close()
	m, sizes := map[string]int64{}, map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 || strings.HasPrefix(fs[0], "#") || fs[0] == "slabinfo" {
			continue
		}
		active, _ := strconv.ParseInt(fs[1], 10, 64)
		size, _ := strconv.ParseInt(fs[3], 10, 64)
		m[fs[0]] += active * size
		sizes[fs[0]] = size
	}
	return m, sizes, sc.Err()
}

// vmRSS is a process's resident set in bytes.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n * 1024, err
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS", pid)
}
