package wsclient

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// tlsEchoServer is a gorilla/websocket echo server behind TLS (httptest's
// own certificate, for 127.0.0.1 and example.com); every ClientHello's
// server name is sent on sni.
func tlsEchoServer(t *testing.T, sni chan<- string) (*httptest.Server, string) {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			typ, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	}))
	srv.TLS = &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		select {
		case sni <- h.ServerName:
		default:
		}
		return nil, nil
	}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, strings.TrimPrefix(srv.URL, "https://")
}

func TestDialTLSVerifiesAndEchoes(t *testing.T) {
	sni := make(chan string, 4)
	srv, addr := tlsEchoServer(t, sni)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	_, port, _ := net.SplitHostPort(addr)

	for _, tc := range []struct {
		name, addr string
		conf       *tls.Config
		wantSNI    string
	}{
		// An IP literal is verified against the certificate's IP SANs and,
		// as the TLS rules have it, sent as no server name at all.
		{"ip", addr, &tls.Config{RootCAs: pool}, ""},
		// A name given in the config wins over the address's host.
		{"named", addr, &tls.Config{RootCAs: pool, ServerName: "example.com"}, "example.com"},
		// No name given: the host of the address dialled, as for a URL.
		{"from host", net.JoinHostPort("localhost", port), &tls.Config{InsecureSkipVerify: true}, "localhost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for len(sni) > 0 {
				<-sni
			}
			c, err := Dial(tc.addr, Options{Timeout: testTimeout, TLS: tc.conf}, Request{Path: "/"})
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer c.Close()
			if _, ok := c.Conn.(*tls.Conn); !ok {
				t.Fatalf("Conn is %T, want *tls.Conn", c.Conn)
			}
			select {
			case got := <-sni:
				if got != tc.wantSNI {
					t.Errorf("server name %q, want %q", got, tc.wantSNI)
				}
			case <-time.After(testTimeout):
				t.Fatal("no ClientHello seen")
			}
			_ = c.Conn.SetDeadline(time.Now().Add(testTimeout))
			msg := bytes.Repeat([]byte("s"), 70000)
			if err := c.WriteText(msg); err != nil {
				t.Fatal(err)
			}
			if op, got, err := c.ReadFrame(); err != nil || op != OpText || !bytes.Equal(got, msg) {
				t.Fatalf("echo op %#x, %d bytes, %v", op, len(got), err)
			}
		})
	}
}

func TestDialTLSRefusesUnknownAuthority(t *testing.T) {
	_, addr := tlsEchoServer(t, nil)
	_, err := Dial(addr, Options{Timeout: testTimeout, TLS: &tls.Config{RootCAs: x509.NewCertPool()}}, Request{Path: "/"})
	var ve *tls.CertificateVerificationError
	if !errors.As(err, &ve) {
		t.Fatalf("Dial with no trusted root: %v, want a certificate verification error", err)
	}
}
