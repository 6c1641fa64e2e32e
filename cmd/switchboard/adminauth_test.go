package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"switchboard/internal/haproxycfg"
	"switchboard/internal/promtext"
	"switchboard/internal/relaytest"
)

// selfSigned writes a certificate for 127.0.0.1 into dir and returns the
// files to give --admin-tls-cert-file (the certificate alone) and
// --admin-tls-key-file (the key, beside the certificate again) and a pool
// that trusts the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	caFile, both, err := haproxycfg.SelfSigned(dir)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("%s holds no certificate", caFile)
	}
	return caFile, both, pool
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// authFile writes a user:bcrypt-hash file (at bcrypt's lowest cost: the
// test checks the file's meaning, not bcrypt's strength).
func authFile(t *testing.T, dir string, users map[string]string) string {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("# scrapers\n\n")
	for u, p := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(u + ":" + string(h) + "\n")
	}
	path := filepath.Join(dir, "admin.users")
	writeFile(t, path, b.Bytes())
	return path
}

// The real command with --admin-tls-* and --admin-basic-auth-file serves
// /metrics over HTTPS, and only to the credentials in the file.
func TestAdminServesHTTPSWithBasicAuth(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	users := authFile(t, dir, map[string]string{"prometheus": "s3cret", "other": "pw"})
	admin := relaytest.FreeAddr(t)
	relaytest.Switchboard(t, "--listen", "127.0.0.1:0", "--admin-listen", admin,
		"--admin-tls-cert-file", certFile, "--admin-tls-key-file", keyFile, "--admin-basic-auth-file", users)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := "https://" + admin + "/metrics"

	get := func(user, pass string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s as %q: %v", url, user, err)
		}
		resp.Body.Close()
		return resp
	}
	for _, cred := range [][2]string{{"", ""}, {"prometheus", "wrong"}, {"nobody", "s3cret"}, {"other", "s3cret"}} {
		resp := get(cred[0], cred[1])
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("as %q/%q: status %d, WWW-Authenticate %q; want 401 with a Basic challenge",
				cred[0], cred[1], resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
	for range 2 { // the second time from the cache of passed credentials
		if resp := get("prometheus", "s3cret"); resp.StatusCode != 200 {
			t.Fatalf("with the right credentials: status %d", resp.StatusCode)
		}
	}
	// The whole exposition over HTTPS is still well formed.
	req, _ := http.NewRequest("GET", url, nil)
	req.SetBasicAuth("other", "pw")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("status %d, TLS %v, %v", resp.StatusCode, resp.TLS != nil, err)
	}
	if fams, err := promtext.Parse(string(body)); err != nil || fams["switchboard_build_info"] == nil {
		t.Fatalf("exposition over HTTPS: %v", err)
	}
	// Plain HTTP to the TLS listener is not served.
	if resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + admin + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP was served metrics on the TLS listener")
		}
	}
}

// A bad admin TLS or auth configuration stops the relay at start with
// exit 2 and a line naming the flag.
func TestAdminConfigErrorsExit2(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := selfSigned(t, dir)
	bad := filepath.Join(dir, "bad.users")
	writeFile(t, bad, []byte("prometheus:not-a-bcrypt-hash\n"))
	empty := filepath.Join(dir, "empty.users")
	writeFile(t, empty, []byte("# nobody yet\n"))
	for name, c := range map[string]struct {
		args []string
		flag string
	}{
		"cert without key":  {[]string{"--admin-tls-cert-file", certFile}, "--admin-tls-key-file"},
		"key without cert":  {[]string{"--admin-tls-key-file", keyFile}, "--admin-tls-cert-file"},
		"key is not a key":  {[]string{"--admin-tls-cert-file", certFile, "--admin-tls-key-file", certFile}, "--admin-tls-key-file"},
		"auth file missing": {[]string{"--admin-basic-auth-file", filepath.Join(dir, "none")}, "--admin-basic-auth-file"},
		"not a bcrypt hash": {[]string{"--admin-basic-auth-file", bad}, "line 1"},
		"no users":          {[]string{"--admin-basic-auth-file", empty}, "no user"},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}, c.args...)
		if code := run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), c.flag) {
			t.Errorf("%s: exit %d, stderr %q; want 2 naming %s", name, code, errb.String(), c.flag)
		}
		if strings.Contains(errb.String(), "not-a-bcrypt-hash") {
			t.Errorf("%s: the error quotes the file's hash: %q", name, errb.String())
		}
	}
}
