package kmem

import (
	"net"
	"os"
	"testing"
)

// The readers parse this machine's real /proc; a socket opened between two
// readings shows in sockstat's counts.
func TestReadersParseThisMachine(t *testing.T) {
	if slab, err := Meminfo("Slab"); err != nil || slab <= 0 {
		t.Fatalf("Meminfo(Slab) = %d, %v", slab, err)
	}
	if _, err := Meminfo("NoSuchLine"); err == nil {
		t.Fatal("Meminfo of a missing line: no error")
	}
	if rss, err := VmRSS(os.Getpid()); err != nil || rss <= 0 {
		t.Fatalf("VmRSS = %d, %v", rss, err)
	}
	si, ok, err := ReadSlabinfo()
	if err != nil {
		t.Fatal(err)
	}
	if ok && (len(si.Active) == 0 || si.ObjSize["TCP"] == 0 && si.ObjSize["tcp_sock"] == 0 && len(si.ObjSize) == 0) {
		t.Fatalf("slabinfo readable but empty: %d caches", len(si.Active))
	}
	before, err := ReadSockstat()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	after, err := ReadSockstat()
	if err != nil {
		t.Fatal(err)
	}
	if after.TCPInuse < 1 || after.Used < 1 {
		t.Fatalf("sockstat with a listener open: %+v (before %+v)", after, before)
	}
}
