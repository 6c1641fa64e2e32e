package haproxycfg

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Loopback says how to rewrite the shipped config.
type Loopback struct {
	// TLSAddr is host:port for the TLS bind (the shipped `bind :443 ssl`);
	// Cert the PEM file (certificate and key) it serves.
	TLSAddr, Cert string
	// Server is the one relay node: host:port, or unix@/path for a relay
	// listening on a unix socket.
	Server string
	// Maxconn replaces every maxconn (HAProxy raises its open-file limit to
	// about twice it, which a box with a hard limit refuses).
	Maxconn int
	// Global lines are added at the end of the global section, one setting
	// each (tune.bufsize 8192, say): how a measurement tries a setting
	// without editing the shipped file.
	Global []string
	// FreeAddr gives a free loopback host:port for every other bind (the
	// ACME and exporter frontends); nil uses FreeAddr.
	FreeAddr func() (string, error)
}

// Rewrite adapts the shipped config: the TLS bind listens on TLSAddr with
// Cert, every other bind on a free port, IPv6 binds go, the relays backend
// has the one node Server (keeping id 1, so the hash ring is the shipped
// one's first node), maxconn is Maxconn, and what needs root (user, group,
// chroot, the stats socket, /dev/log) goes. Comments are dropped. A
// shipped file reshaped so that there is no TLS bind or no relay server to
// rewrite is an error, not a half-rewritten config.
func (o Loopback) Rewrite(shipped string) (string, error) {
	free := o.FreeAddr
	if free == nil {
		free = FreeAddr
	}
	var out strings.Builder
	section := ""
	sawTLS, sawServer := false, false
	flushGlobal := func() {
		if section == "global" {
			for _, g := range o.Global {
				out.WriteString("    " + g + "\n")
			}
		}
	}
	sc := bufio.NewScanner(strings.NewReader(shipped))
	for sc.Scan() {
		line := sc.Text()
		trim := strings.TrimSpace(line)
		if trim == "" || strings.HasPrefix(trim, "#") {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			flushGlobal()
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
			line = "    maxconn " + strconv.Itoa(o.Maxconn)
		case f[0] == "bind" && len(f) > 1 && strings.HasPrefix(f[1], "["):
			continue // IPv6: a loopback box may have none, and one family measures the same
		case f[0] == "bind" && len(f) > 1:
			if i := indexOf(f, "crt"); i > 0 && i+1 < len(f) {
				f[1], f[i+1] = o.TLSAddr, o.Cert
				sawTLS = true
			} else {
				a, err := free()
				if err != nil {
					return "", err
				}
				f[1] = a
			}
			line = "    " + strings.Join(f, " ")
		case section == "backend relays" && f[0] == "server":
			if sawServer {
				continue
			}
			sawServer = true
			line = "    server relay1 " + o.Server + " id 1"
		}
		out.WriteString(line + "\n")
	}
	flushGlobal()
	if err := sc.Err(); err != nil {
		return "", err
	}
	if !sawTLS || !sawServer {
		return "", fmt.Errorf("deploy/haproxy.cfg: found no TLS bind (%v) or no server in backend relays (%v) to rewrite", sawTLS, sawServer)
	}
	return out.String(), nil
}

func indexOf(f []string, s string) int {
	for i, v := range f {
		if v == s {
			return i
		}
	}
	return -1
}

// FreeAddr returns a 127.0.0.1 host:port nobody was listening on a moment
// ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Path finds haproxy on PATH or where Debian installs it; "" when it is not
// installed.
func Path() string {
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
