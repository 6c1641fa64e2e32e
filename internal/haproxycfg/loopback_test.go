package haproxycfg

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const shippedFile = "../../deploy/haproxy.cfg"

// TestRewriteShipped: the shipped file, rewritten, keeps its settings and
// frontends but binds loopback only, names one relay node, drops what
// needs root, carries the extra global lines, and passes `haproxy -c` when
// HAProxy is installed.
func TestRewriteShipped(t *testing.T) {
	shipped, err := os.ReadFile(shippedFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, crt, err := SelfSigned(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Loopback{TLSAddr: "127.0.0.1:18443", Cert: crt, Server: "unix@/tmp/relay.sock", Maxconn: 500,
		Global: []string{"tune.bufsize 8192"}}.Rewrite(string(shipped))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"bind 127.0.0.1:18443 ssl crt " + crt + " alpn http/1.1\n",
		"server relay1 unix@/tmp/relay.sock id 1\n",
		"    maxconn 500\n",
		"    tune.bufsize 8192\ndefaults\n",
		"send-proxy-v2",
		"ssl-default-bind-options",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("rewritten config has no %q:\n%s", want, cfg)
		}
	}
	for _, gone := range []string{"chroot", "user haproxy", "stats socket", "/dev/log", "[::]", "10.0.0.", ":443 ", "1000000"} {
		if strings.Contains(cfg, gone) {
			t.Errorf("rewritten config still has %q", gone)
		}
	}
	if _, err := (Loopback{TLSAddr: "x", Cert: "y", Server: "z"}).Rewrite("global\n    maxconn 10\n"); err == nil {
		t.Errorf("a config with no TLS bind and no server was rewritten without an error")
	}
	hap := Path()
	if hap == "" {
		t.Skip("haproxy not installed: the rewritten config is not checked with haproxy -c")
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(hap, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Errorf("haproxy -c: %v\n%s\n%s", err, out, cfg)
	}
}
