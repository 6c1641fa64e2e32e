package bench

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var flagHeapProfile = flag.String("heapprofile", "", "BenchmarkIdle: run each relay with GODEBUG=memprofilerate=1 and save its heap profile (after a forced GC) at the small and the large fleet as DIR/<relay>-small.pb.gz and DIR/<relay>-large.pb.gz (and .txt, the text form with MemStats); their difference divided by the added connections is the cost of one idle connection by allocation site")

// saveHeapProfile writes the relay's heap profile, taken after a GC, to
// the -heapprofile folder under name; it does nothing when the flag is unset.
func (p *relayProc) saveHeapProfile(tb testing.TB, impl, name string) {
	tb.Helper()
	if *flagHeapProfile == "" {
		return
	}
	if err := os.MkdirAll(*flagHeapProfile, 0o755); err != nil {
		tb.Fatal(err)
	}
	body := p.get(tb, "/debug/pprof/heap?gc=1")
	path := filepath.Join(*flagHeapProfile, impl+"-"+name+".pb.gz")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		tb.Fatalf("writing the heap profile: %v", err)
	}
	// The text form ends with runtime.MemStats: stacks, spans and the
	// runtime's other off-heap memory, which the profile does not show.
	text := p.get(tb, "/debug/pprof/heap?debug=1")
	if err := os.WriteFile(filepath.Join(*flagHeapProfile, impl+"-"+name+".txt"), []byte(text), 0o644); err != nil {
		tb.Fatalf("writing the heap profile: %v", err)
	}
	tb.Logf("heap profile of %s at %s: %s", impl, name, path)
}
