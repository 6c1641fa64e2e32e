package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"switchboard/internal/relaytest"
)

// The TLS tests run swload through the installed HAProxy with the shipped
// deploy/haproxy.cfg, rewritten only where a test must differ: loopback
// binds on free ports, a certificate made here, one relay node, no
// privileges, and small limits (this machine allows a process 20,000 open
// files; the shipped maxconn would have HAProxy ask for two million).

// haproxyStartWait bounds how long HAProxy may take to serve through TLS.
const haproxyStartWait = 20 * time.Second

// haproxyPath finds haproxy on PATH or where Debian installs it.
func haproxyPath() string {
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/haproxy", "/usr/local/sbin/haproxy"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and localhost:
// ca.pem (the certificate, for --ca-file) and relay.pem (certificate and
// key in one file, as HAProxy's crt wants).
func selfSigned(t *testing.T, dir string) (caFile, crtFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "swload test relay"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	caFile, crtFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "relay.pem")
	if err := os.WriteFile(caFile, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	both := append(cert, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})...)
	if err := os.WriteFile(crtFile, both, 0o600); err != nil {
		t.Fatal(err)
	}
	return caFile, crtFile
}

// testMaxconn replaces the shipped maxconn: a few hundred connections are
// all a test makes, and HAProxy sizes its open-file limit from it.
const testMaxconn = "256"

// rewriteHAProxyConfig adapts the shipped config for a test: the TLS bind
// listens on tlsAddr with crt, every other bind on a free port, the relays
// backend has the one node relay, and what needs root (user, group,
// chroot, the stats socket, /dev/log) goes. Comments are dropped.
func rewriteHAProxyConfig(t *testing.T, shipped, tlsAddr, crt, relay string) string {
	t.Helper()
	var out strings.Builder
	section := ""
	sawTLS, sawServer := false, false
	sc := bufio.NewScanner(strings.NewReader(shipped))
	for sc.Scan() {
		line := sc.Text()
		trim := strings.TrimSpace(line)
		if trim == "" || strings.HasPrefix(trim, "#") {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			section = trim
			out.WriteString(line + "\n")
			continue
		}
		f := strings.Fields(trim)
		switch {
		case section == "global" && (f[0] == "user" || f[0] == "group" || f[0] == "chroot" || (f[0] == "stats" && len(f) > 1 && f[1] == "socket")):
			continue
		case section == "global" && f[0] == "log":
			line = "    log stderr format raw local0 notice"
		case f[0] == "maxconn":
			line = "    maxconn " + testMaxconn
		case f[0] == "bind" && len(f) > 1:
			if i := indexOf(f, "crt"); i > 0 && i+1 < len(f) {
				f[1], f[i+1] = tlsAddr, crt
				sawTLS = true
			} else {
				f[1] = relaytest.FreeAddr(t)
			}
			line = "    " + strings.Join(f, " ")
		case section == "backend relays" && f[0] == "server":
			if sawServer {
				continue
			}
			sawServer = true
			line = "    server relay1 " + relay + " id 1"
		}
		out.WriteString(line + "\n")
	}
	if !sawTLS || !sawServer {
		t.Fatalf("deploy/haproxy.cfg: found no TLS bind (%v) or no server in backend relays (%v) to rewrite", sawTLS, sawServer)
	}
	return out.String()
}

func indexOf(f []string, s string) int {
	for i, v := range f {
		if v == s {
			return i
		}
	}
	return -1
}

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
	hap := haproxyPath()
	if hap == "" {
		t.Skip("haproxy not installed (apt-get install haproxy): the wss:// tests need a TLS terminator")
	}
	shipped, err := os.ReadFile("../../deploy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, crt := selfSigned(t, dir)
	fe := &tlsFrontend{addr: relaytest.FreeAddr(t), caFile: caFile}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(rewriteHAProxyConfig(t, string(shipped), fe.addr, crt, relay)), 0o644); err != nil {
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
