package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"switchboard/internal/haproxycfg"
	"switchboard/internal/relaytest"
)

// The TLS tests run swload through the installed HAProxy with the shipped
// deploy/haproxy.cfg, rewritten by internal/haproxycfg only where a test
// must differ: loopback binds on free ports, a certificate made here, one
// relay node, no privileges, and small limits (this machine allows a
// process 20,000 open files; the shipped maxconn would have HAProxy ask
// for two million).

// haproxyStartWait bounds how long HAProxy may take to serve through TLS.
const haproxyStartWait = 20 * time.Second

// testMaxconn replaces the shipped maxconn: a few hundred connections are
// all a test makes, and HAProxy sizes its open-file limit from it.
const testMaxconn = 256

// tlsFrontend is HAProxy terminating TLS in front of a relay.
type tlsFrontend struct {
	addr   string // host:port of the TLS bind
	caFile string
	proc   *relaytest.Process
}

// startTLSFrontend runs HAProxy with the shipped config in front of relay
// (which must accept PROXY protocol v2, as the shipped backend sends it)
// and waits until /healthz answers 200 through TLS. It skips the test when
// HAProxy is not installed.
func startTLSFrontend(t *testing.T, relay string) *tlsFrontend {
	t.Helper()
	hap := haproxycfg.Path()
	if hap == "" {
		t.Skip("haproxy not installed (apt-get install haproxy): the wss:// tests need a TLS terminator")
	}
	shipped, err := os.ReadFile("../../deploy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, crt, err := haproxycfg.SelfSigned(dir)
	if err != nil {
		t.Fatal(err)
	}
	fe := &tlsFrontend{addr: relaytest.FreeAddr(t), caFile: caFile}
	cfg, err := haproxycfg.Loopback{TLSAddr: fe.addr, Cert: crt, Server: relay, Maxconn: testMaxconn,
		FreeAddr: func() (string, error) { return relaytest.FreeAddr(t), nil }}.Rewrite(string(shipped))
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(hap, "-c", "-f", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c on the rewritten deploy/haproxy.cfg: %v\n%s", err, out)
	}
	fe.proc = relaytest.Exec(t, relaytest.Command{Path: hap, Args: []string{"-f", cfgPath, "-db"}})

	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(caFile)
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(haproxyStartWait)
	for {
		resp, err := client.Get("https://" + fe.addr + "/healthz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return fe
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		select {
		case <-fe.proc.Exited():
			t.Fatalf("haproxy exited:\n%s", fe.proc.Logs.Tail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 200 from /healthz through HAProxy's TLS after %v (%v):\n%s", haproxyStartWait, err, fe.proc.Logs.Tail())
		}
		time.Sleep(20 * time.Millisecond) // a process must start
	}
}
