package main

// Graceful shutdown of the real process (the relay protocol, §9): SIGTERM
// closes every binary and phone with 1001 `shutting down`, refuses new
// upgrades, waits for the close handshakes, and exits 0.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const sigtermWait = 20 * time.Second // bounds each wait in this test

// buildSwitchboard compiles this command into dir.
func buildSwitchboard(t *testing.T, dir string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "switchboard")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// logSink collects the relay's stderr and reports the listening address.
type logSink struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	partial   []byte
	listening chan string
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		if strings.Contains(line, "msg=listening") {
			for _, f := range strings.Fields(line) {
				if addr, ok := strings.CutPrefix(f, "addr="); ok {
					select {
					case l.listening <- addr:
					default:
					}
				}
			}
		}
	}
	return len(p), nil
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// wsClient is a goroutine-free WebSocket client on a plain net.Conn.
type wsClient struct {
	nc net.Conn
	br *bufio.Reader
}

var srcCounter atomic.Uint32

// dialSpread dials from 127.0.0.2 … 127.0.0.9 in turn, so thousands of
// connections (and TIME_WAIT from earlier runs) do not exhaust one source
// address's ephemeral ports.
func dialSpread(addr string) (net.Conn, error) {
	n := srcCounter.Add(1)
	d := net.Dialer{Timeout: sigtermWait, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+n%8))}}
	return d.Dial("tcp", addr)
}

func upgradeRequest(path, serverID, key string) string {
	role := "X-Pyrycode-Version: 2\r\nUser-Agent: sigterm-binary/1\r\n"
	if path == "/v1/client" {
		role = "X-Pyrycode-Token: tok\r\nUser-Agent: sigterm-phone/1\r\n"
	}
	return fmt.Sprintf("GET %s HTTP/1.1\r\nHost: relay.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\nX-Pyrycode-Server: %s\r\n%s\r\n", path, key, serverID, role)
}

// wsUpgrade returns the response to an upgrade request for path, and the
// client when it is a valid 101.
func wsUpgrade(addr, path, serverID string) (*wsClient, int, error) {
	nc, err := dialSpread(addr)
	if err != nil {
		return nil, 0, err
	}
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	_ = nc.SetDeadline(time.Now().Add(sigtermWait))
	c := &wsClient{nc: nc, br: bufio.NewReaderSize(nc, 256)}
	if _, err := io.WriteString(nc, upgradeRequest(path, serverID, key)); err != nil {
		nc.Close()
		return nil, 0, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		nc.Close()
		return nil, 0, fmt.Errorf("reading the upgrade response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, resp.StatusCode, nil
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != base64.StdEncoding.EncodeToString(sum[:]) {
		nc.Close()
		return nil, 0, fmt.Errorf("bad Sec-WebSocket-Accept %q", got)
	}
	_ = nc.SetDeadline(time.Time{})
	return c, resp.StatusCode, nil
}

// readClose reads frames until a close frame (skipping pings, which the
// relay may send) and returns its code and reason.
func (c *wsClient) readClose() (int, string, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(sigtermWait))
	for {
		var h [2]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return 0, "", err
		}
		if h[1]&0x80 != 0 || h[1]&0x7f > 125 {
			return 0, "", fmt.Errorf("unexpected frame header %#x %#x", h[0], h[1])
		}
		payload := make([]byte, h[1]&0x7f)
		if _, err := io.ReadFull(c.br, payload); err != nil {
			return 0, "", err
		}
		switch op := h[0] & 0x0f; op {
		case 0x9: // ping
			continue
		case 0x8:
			if len(payload) < 2 {
				return 1005, "", nil
			}
			return int(binary.BigEndian.Uint16(payload)), string(payload[2:]), nil
		default:
			return 0, "", fmt.Errorf("frame opcode %#x %q before the close", op, payload)
		}
	}
}

// forEach runs f over conns on a few goroutines and returns the first error.
func forEach[T any](items []T, f func(int, T) error) error {
	const workers = 8
	var wg sync.WaitGroup
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < len(items); i = int(next.Add(1)) - 1 {
				if err := f(i, items[i]); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func TestSIGTERMDrainsEveryConnectionAndExits0(t *testing.T) {
	const (
		binaries    = 180
		phonesEach  = 16 // the per-server-id cap
		drain       = 5 * time.Second
		connections = binaries * (1 + phonesEach)
	)
	bin := buildSwitchboard(t, t.TempDir())

	logs := &logSink{listening: make(chan string, 1)}
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--admin-listen", "", "--drain-timeout", drain.String(),
		"--rate-limit-burst", "0") // every client is on loopback: no per-IP limit
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed once waitErr is set
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	var addr string
	select {
	case addr = <-logs.listening:
	case <-exited:
		t.Fatalf("relay exited before listening: %v\n%s", waitErr, logs)
	case <-time.After(sigtermWait):
		t.Fatalf("relay not listening after %v\n%s", sigtermWait, logs)
	}

	// 180 binaries with 16 phones each, opened by a few workers.
	groups := make([]int, binaries)
	clients := make([][]*wsClient, binaries)
	err := forEach(groups, func(g, _ int) error {
		id := fmt.Sprintf("sigterm-%d", g)
		b, status, err := wsUpgrade(addr, "/v1/server", id)
		if err != nil || b == nil {
			return fmt.Errorf("binary %s: status %d, %v", id, status, err)
		}
		cs := []*wsClient{b}
		for i := range phonesEach {
			p, status, err := wsUpgrade(addr, "/v1/client", id)
			if err != nil || p == nil {
				return fmt.Errorf("phone %d of %s: status %d, %v", i, id, status, err)
			}
			cs = append(cs, p)
		}
		clients[g] = cs
		return nil
	})
	var all []*wsClient
	for _, cs := range clients {
		all = append(all, cs...)
	}
	t.Cleanup(func() {
		for _, c := range all {
			c.nc.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != connections {
		t.Fatalf("%d connections open, want %d", len(all), connections)
	}

	// Every phone is registered (its 101 came after the registry's
	// decision; /healthz confirms no 4404 slipped in).
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var health struct {
		Binaries int `json:"connected_binaries"`
		Phones   int `json:"connected_phones"`
	}
	err = json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if err != nil || health.Binaries != binaries || health.Phones != binaries*phonesEach {
		t.Fatalf("healthz: %+v %v, want %d binaries and %d phones", health, err, binaries, binaries*phonesEach)
	}

	sigAt := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// The first client's close frame proves the drain has begun; nobody has
	// answered yet, so the relay is still draining: a new upgrade is refused.
	if code, reason, err := all[0].readClose(); err != nil || code != 1001 || reason != "shutting down" {
		t.Fatalf("first client: close %d %q, %v; want 1001 %q", code, reason, err, "shutting down")
	}
	firstCloseAfter := time.Since(sigAt)
	late, status, err := wsUpgrade(addr, "/v1/client", "sigterm-0")
	switch {
	case late != nil:
		late.nc.Close()
		t.Fatal("an upgrade after SIGTERM was accepted")
	case err != nil && errors.Is(err, syscall.ECONNREFUSED):
		t.Logf("upgrade after SIGTERM: connection refused")
	case err != nil:
		t.Fatalf("upgrade after SIGTERM: %v, want 503 or a refused connection", err)
	case status != http.StatusServiceUnavailable:
		t.Fatalf("upgrade after SIGTERM answered %d, want 503", status)
	default:
		t.Logf("upgrade after SIGTERM: 503")
	}
	_ = all[0].nc.Close() // answer: close the socket

	// Every other client gets 1001 `shutting down` and answers by closing.
	var got atomic.Int64
	got.Add(1)
	err = forEach(all[1:], func(i int, c *wsClient) error {
		code, reason, err := c.readClose()
		if err != nil || code != 1001 || reason != "shutting down" {
			return fmt.Errorf("client %d: close %d %q, %v; want 1001 %q", i+1, code, reason, err, "shutting down")
		}
		got.Add(1)
		return c.nc.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	allClosedAfter := time.Since(sigAt)

	select {
	case <-exited:
		took := time.Since(sigAt)
		if waitErr != nil {
			t.Fatalf("relay exited with %v after SIGTERM, want status 0\n%s", waitErr, tail(logs.String()))
		}
		if took > drain {
			t.Fatalf("relay exited %v after SIGTERM, want within the drain timeout %v", took, drain)
		}
		t.Logf("%d connections (%d binaries, %d phones) got 1001 (first %v, all %v after SIGTERM); relay exited 0 after %v (drain timeout %v)",
			got.Load(), binaries, binaries*phonesEach, firstCloseAfter, allClosedAfter, took, drain)
	case <-time.After(drain + sigtermWait):
		t.Fatalf("relay still running %v after SIGTERM\n%s", time.Since(sigAt), tail(logs.String()))
	}

	out := logs.String()
	wantDraining := fmt.Sprintf("msg=draining binaries=%d phones=%d", binaries, binaries*phonesEach)
	for _, want := range []string{"msg=stopping signal=terminated", wantDraining, "msg=stopped"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q:\n%s", want, tail(out))
		}
	}
	if strings.Contains(out, "drain deadline passed") {
		t.Errorf("the drain ran into its deadline although every client answered:\n%s", tail(out))
	}
}

// tail is the end of a long log, for failure messages.
func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}
