package main

import (
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"switchboard/internal/promtext"
	"switchboard/internal/relaytest"
)

// dashboardFamilies are the families the standard Go-process and node
// dashboards query, with the type each must be declared as.
var dashboardFamilies = map[string]string{
	"process_resident_memory_bytes":   "gauge",
	"process_virtual_memory_bytes":    "gauge",
	"process_open_fds":                "gauge",
	"process_max_fds":                 "gauge",
	"process_cpu_seconds_total":       "counter",
	"process_start_time_seconds":      "gauge",
	"go_goroutines":                   "gauge",
	"go_threads":                      "gauge",
	"go_memstats_alloc_bytes":         "gauge",
	"go_memstats_heap_inuse_bytes":    "gauge",
	"go_memstats_sys_bytes":           "gauge",
	"go_memstats_mallocs_total":       "counter",
	"go_gc_duration_seconds":          "summary",
	"switchboard_build_info":          "gauge",
	"switchboard_live_connections":    "gauge",
	"pyrycode_relay_connected_phones": "gauge",
}

// scrape GETs url with c and parses the body strictly.
func scrape(t *testing.T, c *http.Client, url string) map[string]*promtext.Family {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: status %d, %v", url, resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("content type %q", ct)
	}
	fams, err := promtext.Parse(string(body))
	if err != nil {
		t.Fatalf("scrape is not a well-formed exposition: %v", err)
	}
	return fams
}

// The real command's admin listener serves the relay's families, the
// build and the process and Go families under their standard names, each
// declared once with a # TYPE.
func TestAdminScrapeHasTheStandardFamilies(t *testing.T) {
	admin := relaytest.FreeAddr(t)
	relaytest.Switchboard(t, "--listen", "127.0.0.1:0", "--admin-listen", admin)
	c := &http.Client{Timeout: 10 * time.Second}
	fams := scrape(t, c, "http://"+admin+"/metrics")
	for name, typ := range dashboardFamilies {
		f, ok := fams[name]
		switch {
		case !ok:
			t.Errorf("no %s family", name)
		case f.Type != typ:
			t.Errorf("%s is declared %q, want %q", name, f.Type, typ)
		case len(f.Samples) == 0:
			t.Errorf("%s has no sample", name)
		}
	}
	for name, f := range fams {
		if f.Type == "untyped" {
			t.Errorf("%s has no # TYPE line", name)
		}
	}
	v, ok := promtext.Value(fams, "switchboard_build_info", "switchboard_build_info",
		map[string]string{"version": "dev", "goversion": runtime.Version()})
	if !ok || v != 1 {
		t.Errorf("switchboard_build_info{version=\"dev\",goversion=%q} = %v, %v", runtime.Version(), v, ok)
	}
	if v, _ := promtext.Value(fams, "process_open_fds", "process_open_fds", nil); v < 3 {
		t.Errorf("process_open_fds %v: the relay holds at least its two listeners and stdio", v)
	}
}

func TestBuildInfoEscapesItsLabels(t *testing.T) {
	var b strings.Builder
	writeBuildInfo(&b, "v1 \"odd\"\\\n", "go1.26.8")
	fams, err := promtext.Parse(b.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := promtext.Value(fams, "switchboard_build_info", "switchboard_build_info",
		map[string]string{"version": "v1 \"odd\"\\\n", "goversion": "go1.26.8"}); !ok {
		t.Fatalf("version label not round-tripped:\n%s", b.String())
	}
}
