package main

// The shipped deploy/haproxy.cfg, run for real: rewritten only where a test
// box differs from a balancer (loopback ports instead of 443/80/8405, a
// throwaway certificate, no chroot or user switch, smaller maxconn), it
// must pass `haproxy -c`, serve TLS on IPv4 and IPv6, and serve its
// Prometheus exporter with every haproxy_* metric the rules and dashboard
// name. The scale-out test (haproxy_test.go) uses a config of its own.

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"switchboard/internal/haproxycfg"
	"switchboard/internal/relaytest"
)

const (
	haproxyCfgFile = deployDir + "/haproxy.cfg"
	// hapStartWait bounds HAProxy's start; it takes well under a second.
	hapStartWait = 10 * time.Second
	// hapTestMaxconn replaces the shipped million: HAProxy raises its
	// open-file limit to about twice maxconn, which a test box may refuse.
	hapTestMaxconn = "1000"
)

// hapRewrite is one change to the shipped file; it must match at least
// once, so a reshaped haproxy.cfg fails here instead of being tested
// half-rewritten.
type hapRewrite struct {
	re   *regexp.Regexp
	with string
}

func (r hapRewrite) apply(t *testing.T, cfg string) string {
	t.Helper()
	if !r.re.MatchString(cfg) {
		t.Fatalf("%s: nothing matches %s: update this test's rewrites", haproxyCfgFile, r.re)
	}
	return r.re.ReplaceAllString(cfg, r.with)
}

// ipv6Loopback reports whether this box can listen on [::1].
func ipv6Loopback() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func TestShippedHAProxyConfig(t *testing.T) {
	hap := haproxycfg.Path()
	if hap == "" {
		t.Skip("haproxy not on PATH: install it (apt-get install haproxy) to check deploy/haproxy.cfg")
	}
	vv, err := exec.Command(hap, "-vv").CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -vv: %v\n%s", err, vv)
	}
	if !strings.Contains(string(vv), "prometheus-exporter") {
		t.Fatalf("this haproxy has no prometheus-exporter service, which deploy/haproxy.cfg uses:\n%s", vv)
	}

	cfg := readFile(t, haproxyCfgFile)
	for _, want := range []string{
		`(?m)^\s*bind :443 ssl `,
		`(?m)^\s*bind \[::\]:443 v6only ssl `,
		`(?m)^\s*bind 127\.0\.0\.1:8405$`,
		`(?m)^\s*http-request use-service prometheus-exporter if \{ path /metrics \}$`,
	} {
		if !regexp.MustCompile(want).MatchString(cfg) {
			t.Errorf("%s: no line matching %s", haproxyCfgFile, want)
		}
	}

	dir := t.TempDir()
	_, pemPath, err := haproxycfg.SelfSigned(dir)
	if err != nil {
		t.Fatal(err)
	}
	https4, http4, exporter := relaytest.FreeAddr(t), relaytest.FreeAddr(t), relaytest.FreeAddr(t)
	_, httpsPort, _ := net.SplitHostPort(https4)
	_, httpPort, _ := net.SplitHostPort(http4)
	v6 := ipv6Loopback()
	v6bind := func(port string) string {
		if v6 {
			return "${1}bind [::1]:" + port + " v6only"
		}
		return "${1}# no IPv6 on this box:"
	}
	// A closed loopback port: health checks fail at once and nothing leaves
	// the box.
	node := relaytest.FreeAddr(t)
	for _, r := range []hapRewrite{
		{regexp.MustCompile(`(?m)^\s*(chroot|user|group|stats socket)\s.*$`), ""},
		{regexp.MustCompile(`log /dev/log local0 notice`), "log stderr format raw local0 notice"},
		{regexp.MustCompile(`(?m)^(\s*)maxconn 1000000$`), "${1}maxconn " + hapTestMaxconn},
		{regexp.MustCompile(`/etc/haproxy/certs/relay\.pem`), pemPath},
		{regexp.MustCompile(`(?m)^(\s*)bind \[::\]:443 v6only`), v6bind(httpsPort)},
		{regexp.MustCompile(`(?m)^(\s*)bind :443 `), "${1}bind " + https4 + " "},
		{regexp.MustCompile(`(?m)^(\s*)bind \[::\]:80 v6only`), v6bind(httpPort)},
		{regexp.MustCompile(`(?m)^(\s*)bind :80$`), "${1}bind " + http4},
		{regexp.MustCompile(`(?m)^(\s*)bind 127\.0\.0\.1:8405$`), "${1}bind " + exporter},
		{regexp.MustCompile(`(?m)^(\s*server relay\d+ )10\.0\.0\.\d+:8080`), "${1}" + node},
	} {
		cfg = r.apply(t, cfg)
	}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(hap, "-c", "-f", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c on the shipped config (rewritten for the test): %v\n%s\n--- config:\n%s", err, out, cfg)
	}

	p := relaytest.Exec(t, relaytest.Command{Path: hap, Args: []string{"-f", cfgPath, "-db"}})
	client := &http.Client{Timeout: 2 * time.Second}
	var body string
	deadline := time.Now().Add(hapStartWait)
	for {
		resp, err := client.Get("http://" + exporter + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				body = string(b)
				break
			}
		}
		select {
		case <-p.Exited():
			t.Fatalf("haproxy exited: %v\n%s", p.Err(), p.Logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter not serving after %v (%v):\n%s", hapStartWait, err, p.Logs.String())
		}
		time.Sleep(20 * time.Millisecond) // a process must start
	}

	// Every haproxy_* name the kit uses is served.
	served := seriesNames(body)
	var refs []string
	for f, text := range map[string]string{rulesFile: yamlComments(readFile(t, rulesFile)), dashboardFile: dashboardQueries(t)} {
		m, _ := metricRefs(text, []string{"haproxy_"})
		for name := range m {
			refs = append(refs, name)
			if !served[name] {
				t.Errorf("%s refers to %s, which HAProxy's exporter does not serve", f, name)
			}
		}
	}
	if len(refs) < 5 {
		t.Errorf("only %d haproxy_ names found in the rules and the dashboard: is the pattern still right?", len(refs))
	}
	if !strings.Contains(body, `haproxy_server_status{proxy="relays",server="relay1",state="DOWN"}`) {
		t.Errorf("exporter has no relay1 state series that HAProxyRelayNodeDown could select")
	}

	// The exporter answers nothing but /metrics.
	if resp, err := client.Get("http://" + exporter + "/"); err != nil || resp.StatusCode != 404 {
		t.Errorf("exporter GET /: %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}

	// TLS on both families, answered by the frontend's own rules (no node
	// is up): an unknown path 404, an upgrade path without a server-id 400.
	tlsClient := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the throwaway certificate above
	}}
	fronts := []string{https4}
	if v6 {
		fronts = append(fronts, "[::1]:"+httpsPort)
	}
	for _, fe := range fronts {
		for path, want := range map[string]int{"/nope": 404, "/v1/client": 400} {
			resp, err := tlsClient.Get("https://" + fe + path)
			if err != nil {
				t.Errorf("https://%s%s: %v", fe, path, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("https://%s%s: status %d, want %d", fe, path, resp.StatusCode, want)
			}
		}
	}
}
