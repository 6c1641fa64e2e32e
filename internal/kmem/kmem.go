// Package kmem reads what the kernel says about its memory and sockets
// from /proc, for the measurement commands (bench/stackmem, bench/sockslab).
// Every figure is in bytes unless its name says otherwise.
package kmem

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Meminfo is the value of one /proc/meminfo line, such as "Slab" or
// "SUnreclaim", in bytes.
func Meminfo(key string) (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			n, err := strconv.ParseInt(f[0], 10, 64)
			return n << 10, err // kB
		}
	}
	return 0, fmt.Errorf("/proc/meminfo has no %s line", key)
}

// Slabinfo is /proc/slabinfo by cache name: Active is active objects ×
// object size, Total all objects × object size, ObjSize the object size.
// Caches the kernel merged are listed under one name.
type Slabinfo struct {
	Active, Total, ObjSize map[string]int64
}

// ReadSlabinfo reads /proc/slabinfo. It needs root: without it the maps
// are empty and ok is false, and the meminfo totals are all there is.
func ReadSlabinfo() (s Slabinfo, ok bool, err error) {
	s = Slabinfo{Active: map[string]int64{}, Total: map[string]int64{}, ObjSize: map[string]int64{}}
	f, err := os.Open("/proc/slabinfo")
	if err != nil {
		return s, false, nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 || strings.HasPrefix(fs[0], "#") || fs[0] == "slabinfo" {
			continue
		}
		active, err1 := strconv.ParseInt(fs[1], 10, 64)
		total, err2 := strconv.ParseInt(fs[2], 10, 64)
		size, err3 := strconv.ParseInt(fs[3], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		s.Active[fs[0]] += active * size
		s.Total[fs[0]] += total * size
		s.ObjSize[fs[0]] = size
	}
	return s, true, sc.Err()
}

// Sockstat is /proc/net/sockstat: this network namespace's sockets in use
// (every family), TCP sockets in use and TCP TIME_WAIT entries.
type Sockstat struct {
	Used, TCPInuse, TCPTimeWait int64
}

// ReadSockstat reads /proc/net/sockstat.
func ReadSockstat() (Sockstat, error) {
	var s Sockstat
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return s, err
	}
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "sockets:":
			s.Used, found = field(f, "used"), found+1
		case len(f) >= 3 && f[0] == "TCP:":
			s.TCPInuse, s.TCPTimeWait, found = field(f, "inuse"), field(f, "tw"), found+1
		}
	}
	if found != 2 {
		return s, fmt.Errorf("/proc/net/sockstat: no sockets or TCP line in %q", b)
	}
	return s, nil
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

// VmRSS is process pid's resident set.
func VmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			n, err := strconv.ParseInt(f[0], 10, 64)
			return n << 10, err
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS in /proc/%d/status", pid, pid)
}
