package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// slab is the kernel's slab memory at one moment.
type slab struct {
	total  int64            // /proc/meminfo Slab, bytes
	caches map[string]int64 // num_objs × objsize by cache; nil without /proc/slabinfo
}

func readSlab() (slab, error) {
	var s slab
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return s, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Slab:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return s, fmt.Errorf("/proc/meminfo Slab line %q: %w", sc.Text(), err)
			}
			s.total = kb << 10
		}
	}
	if s.total == 0 {
		return s, fmt.Errorf("/proc/meminfo has no Slab line")
	}
	s.caches = readSlabinfo()
	return s, nil
}

// readSlabinfo is nil where /proc/slabinfo is not readable (it needs root).
func readSlabinfo() map[string]int64 {
	f, err := os.Open("/proc/slabinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	m := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 || strings.HasPrefix(fs[0], "#") || fs[0] == "slabinfo" {
			continue
		}
		objs, err1 := strconv.ParseInt(fs[2], 10, 64)
		size, err2 := strconv.ParseInt(fs[3], 10, 64)
		if err1 == nil && err2 == nil {
			m[fs[0]] = objs * size
		}
	}
	return m
}

// sockstat is /proc/net/sockstat's machine-wide counts (this network
// namespace's): sockets in use, every family, and TCP TIME_WAIT entries.
type sockstat struct{ sockets, tw int }

func readSockstat() (sockstat, error) {
	var s sockstat
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return s, err
	}
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			v, err := strconv.Atoi(f[i+1])
			if err != nil {
				continue
			}
			switch {
			case f[0] == "sockets:" && f[i] == "used":
				s.sockets = v
				found++
			case f[0] == "TCP:" && f[i] == "tw":
				s.tw = v
				found++
			}
		}
	}
	if found != 2 {
		return s, fmt.Errorf("/proc/net/sockstat: no sockets used or TCP tw count in %q", b)
	}
	return s, nil
}
