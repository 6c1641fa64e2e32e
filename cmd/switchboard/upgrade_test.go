package main

// Live upgrade, step 1 (docs/operations.md, Upgrading), on real processes
// and sockets: SIGUSR2 sent as deploy/switchboard.service's ExecReload
// sends it starts the file now installed at the relay's path, the listeners
// move to it, the old process drains (1001) and exits 0; a successor that
// fails is killed and the old process serves on.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"switchboard/internal/relaytest"
	"switchboard/internal/wsclient"
)

const upgradeWait = 20 * time.Second // bounds each wait in these tests

// prSetChildSubreaper is prctl(2)'s PR_SET_CHILD_SUBREAPER.
const prSetChildSubreaper = 36

// subreaper makes this test process the one a successor is reparented to
// when the relay that started it exits, so a test can wait for it and read
// its exit status as for its own child.
var subreaper = sync.OnceValue(func() error {
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		return e
	}
	return nil
})

// orphan is a successor: not started by the test, but its child once the
// process that started it has exited.
type orphan struct {
	pid    int
	once   sync.Once
	status syscall.WaitStatus
	err    error
}

// wait reaps it (its parent must have exited) within upgradeWait.
func (o *orphan) wait(t *testing.T) syscall.WaitStatus {
	t.Helper()
	done := make(chan struct{})
	go func() {
		o.once.Do(func() { _, o.err = syscall.Wait4(o.pid, &o.status, 0, nil) })
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(upgradeWait):
		t.Fatalf("successor %d still running after %v", o.pid, upgradeWait)
	}
	if o.err != nil {
		t.Fatalf("waiting for successor %d: %v", o.pid, o.err)
	}
	return o.status
}

// adopt kills the successor pid when the test ends, if it still runs.
func adopt(t *testing.T, pid int) *orphan {
	o := &orphan{pid: pid}
	t.Cleanup(func() {
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			o.once.Do(func() { _, o.err = syscall.Wait4(pid, &o.status, 0, nil) })
		}
	})
	return o
}

// install puts a copy of src at dst the way a package manager or install(1)
// replaces a running binary: a new file under the same path (writing into
// the running one fails with ETXTBSY). It returns the new file's inode.
// upgradable makes this test process a subreaper (or skips) and installs
// the built relay at a path of the test's own, as a release would: it
// returns the built file, to install again for an upgrade, and that path.
func upgradable(t *testing.T) (built, exe string) {
	t.Helper()
	if err := subreaper(); err != nil {
		t.Skipf("cannot become a subreaper to wait for successors: %v", err)
	}
	built = relaytest.Build(t, "switchboard/cmd/switchboard")
	exe = filepath.Join(t.TempDir(), "switchboard")
	install(t, built, exe)
	return built, exe
}

func install(t *testing.T, src, dst string) uint64 {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	return installBytes(t, b, dst)
}

func installBytes(t *testing.T, b []byte, dst string) uint64 {
	t.Helper()
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
	return inode(t, dst)
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// reload runs the unit's ExecReload= line as systemd would for
// `systemctl reload`, with $MAINPID the relay's pid.
func reload(t *testing.T, mainPID int) {
	t.Helper()
	unit := readFile(t, "../../deploy/switchboard.service")
	m := regexp.MustCompile(`(?m)^ExecReload=(.+)$`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatal("deploy/switchboard.service has no ExecReload= line")
	}
	cmd := exec.Command("/bin/sh", "-c", m[1])
	cmd.Env = append(os.Environ(), "MAINPID="+strconv.Itoa(mainPID))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ExecReload=%s with MAINPID=%d: %v\n%s", m[1], mainPID, err, out)
	}
}

// upgradeLine waits for the nth "upgrade finished" line and returns its
// outcome and successor pid.
func upgradeLine(t *testing.T, p *relaytest.Process, n int) (string, int, string) {
	t.Helper()
	line, ok := p.Logs.WaitNth(nil, upgradeWait, n, func(l string) bool { return strings.Contains(l, `msg="upgrade finished"`) })
	if !ok {
		t.Fatalf("no upgrade line %d:\n%s", n, p.Logs.Tail())
	}
	outcome := regexp.MustCompile(`outcome=(\w+)`).FindStringSubmatch(line)
	pid := regexp.MustCompile(`successor_pid=(\d+)`).FindStringSubmatch(line)
	if outcome == nil || pid == nil || !strings.Contains(line, "took=") {
		t.Fatalf("upgrade line without outcome, successor_pid and took: %s", line)
	}
	n, _ = strconv.Atoi(pid[1])
	return outcome[1], n, line
}

// socketInodes is the set of sockets process pid holds.
func socketInodes(t *testing.T, pid int) map[string]bool {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			out[l] = true
		}
	}
	return out
}

// listeningInodes is every TCP socket in LISTEN state on the box, as
// socket:[inode].
func listeningInodes(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if fs := strings.Fields(line); len(fs) > 9 && fs[3] == "0A" {
				out["socket:["+fs[9]+"]"] = true
			}
		}
	}
	return out
}

// upgradeCount scrapes switchboard_upgrades_total{outcome} from admin.
func upgradeCount(t *testing.T, admin, outcome string) int {
	t.Helper()
	fams := scrape(t, http.DefaultClient, "http://"+admin+"/metrics")
	f := fams["switchboard_upgrades_total"]
	if f == nil || f.Type != "counter" {
		t.Fatalf("switchboard_upgrades_total missing or not a counter: %+v", f)
	}
	for _, s := range f.Samples {
		if s.Labels["outcome"] == outcome {
			return int(s.Value)
		}
	}
	t.Fatalf("switchboard_upgrades_total has no outcome=%q", outcome)
	return 0
}

// roundTrip sends msg from the phone and checks the binary's envelope.
func roundTrip(t *testing.T, phone, bin *wsclient.Client, msg string) {
	t.Helper()
	_ = bin.Conn.SetReadDeadline(time.Now().Add(upgradeWait))
	if err := phone.WriteText([]byte(msg)); err != nil {
		t.Fatalf("phone write: %v", err)
	}
	for {
		op, env, err := bin.ReadFrame()
		if err != nil {
			t.Fatalf("binary read: %v", err)
		}
		if op != wsclient.OpText {
			continue // a ping
		}
		if s := string(env); !strings.HasPrefix(s, `{"conn_id":"`) || !strings.HasSuffix(s, `,"frame":`+msg+`}`) {
			t.Fatalf("binary got %s", s)
		}
		return
	}
}

// health is /healthz's counts.
func healthCounts(t *testing.T, addr string) (string, int, int) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("healthz: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var st struct {
		Status   string `json:"status"`
		Binaries int    `json:"connected_binaries"`
		Phones   int    `json:"connected_phones"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("healthz %s: %v", b, err)
	}
	return st.Status, st.Binaries, st.Phones
}

// dialer connects to addr over and over until stop, asking /healthz each
// time, and counts what failed to connect: during an upgrade the listening
// socket never closes, so no dial may be refused.
type dialer struct {
	dials, failed atomic.Int64
	mu            sync.Mutex
	firstErr      error
	stop          chan struct{}
	done          chan struct{}
}

func startDialer(addr string) *dialer {
	d := &dialer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(d.done)
		for {
			select {
			case <-d.stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", addr, upgradeWait)
			d.dials.Add(1)
			if err != nil {
				d.failed.Add(1)
				d.mu.Lock()
				if d.firstErr == nil {
					d.firstErr = err
				}
				d.mu.Unlock()
				continue
			}
			_ = c.SetDeadline(time.Now().Add(upgradeWait))
			_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: relay.test\r\nConnection: close\r\n\r\n")
			_, _ = bufio.NewReader(c).ReadString('\n')
			c.Close()
		}
	}()
	return d
}

func (d *dialer) finish(t *testing.T) {
	t.Helper()
	close(d.stop)
	<-d.done
	if d.failed.Load() != 0 {
		t.Errorf("%d of %d dials failed during the upgrade; first: %v", d.failed.Load(), d.dials.Load(), d.firstErr)
	}
	if d.dials.Load() == 0 {
		t.Error("the dialer never dialled")
	}
}

// notifications listens where a relay's $NOTIFY_SOCKET points and
// delivers each datagram.
func notifications(t *testing.T, name string) <-chan string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan string, 16)
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := c.Read(b)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(b[:n])
		}
	}()
	return ch
}

func nextNotification(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("service manager got %q, want %q", got, want)
		}
	case <-time.After(upgradeWait):
		t.Fatalf("service manager got nothing, want %q", want)
	}
}

func TestUpgradeMovesTheListenersToTheInstalledBinary(t *testing.T) {
	built, exe := upgradable(t)
	addr, admin := relaytest.FreeAddr(t), relaytest.FreeAddr(t)
	notifyName := fmt.Sprintf("@switchboard-upgrade-test-%d", os.Getpid()) // abstract
	notes := notifications(t, notifyName)
	p := relaytest.Exec(t, relaytest.Command{Path: exe, SharedOutput: true, StopGrace: 5 * time.Second,
		Env:  append(relaytest.CleanEnv(), "NOTIFY_SOCKET="+notifyName),
		Args: []string{"--listen", addr, "--admin-listen", admin, "--rate-limit-burst", "0", "--drain-timeout", "5s"}})
	p.WaitListening(t, relaytest.StartTimeout)
	nextNotification(t, notes, "READY=1")
	oldPID := p.Cmd.Process.Pid

	bin, status, err := wsUpgrade(addr, "/v1/server", "upgrade-1")
	if err != nil || bin == nil {
		t.Fatalf("binary: status %d, %v", status, err)
	}
	defer bin.Close()
	var phones []*wsclient.Client
	for range 4 {
		ph, status, err := wsUpgrade(addr, "/v1/client", "upgrade-1")
		if err != nil || ph == nil {
			t.Fatalf("phone: status %d, %v", status, err)
		}
		defer ph.Close()
		phones = append(phones, ph)
	}
	roundTrip(t, phones[0], bin, `{"n":1}`)
	oldSockets := socketInodes(t, oldPID)

	d := startDialer(addr)
	newIno := install(t, built, exe)
	reload(t, oldPID)
	outcome, succPID, line := upgradeLine(t, p, 1)
	if outcome != "succeeded" {
		t.Fatalf("upgrade: %s\n%s", line, p.Logs.Tail())
	}
	succ := adopt(t, succPID)
	if _, ok := p.Logs.Line(func(l string) bool {
		return strings.Contains(l, "msg=listening") && strings.Contains(l, fmt.Sprintf("pid=%d upgraded_from=%d", succPID, oldPID))
	}); !ok {
		t.Errorf("no listening line from successor %d naming %d:\n%s", succPID, oldPID, p.Logs.Tail())
	}
	nextNotification(t, notes, "READY=1")
	nextNotification(t, notes, fmt.Sprintf("MAINPID=%d", succPID))

	// Established peers were handed over: they still route, both ways.
	for i, ph := range phones {
		echo(t, ph, bin, fmt.Sprintf(`{"after_upgrade":%d}`, i))
	}
	select {
	case <-p.Exited():
		if err := p.Err(); err != nil {
			t.Fatalf("old process exit: %v, want 0\n%s", err, p.Logs.Tail())
		}
	case <-time.After(upgradeWait):
		t.Fatalf("old process still running after the upgrade\n%s", p.Logs.Tail())
	}
	// Dials once the old process has closed its copy of the listener too,
	// then none may have failed.
	for i := range 20 {
		c, err := net.DialTimeout("tcp", addr, upgradeWait)
		if err != nil {
			t.Fatalf("dial %d after the old process exited: %v", i, err)
		}
		c.Close()
	}
	d.finish(t)

	// The successor serves, runs the new file and holds the old process's
	// peer sockets, handed over.
	if st, _, _ := healthCounts(t, addr); st != "ok" {
		t.Errorf("healthz from the successor: %q", st)
	}
	exeLink := fmt.Sprintf("/proc/%d/exe", succPID)
	if got := inode(t, exeLink); got != newIno {
		t.Errorf("successor runs inode %d, the installed file is %d", got, newIno)
	}
	if l, _ := os.Readlink(exeLink); l != exe {
		t.Errorf("successor's executable is %q, want %q", l, exe)
	}
	listening := listeningInodes(t)
	conns := 0
	for s := range oldSockets {
		if !listening[s] {
			conns++
		}
	}
	if conns < 5 {
		t.Fatalf("old process held %d non-listening sockets, want at least its 5 peers", conns)
	}
	handed := 0
	for s := range socketInodes(t, succPID) {
		if oldSockets[s] && !listening[s] {
			handed++
		}
	}
	if handed != 5 {
		t.Errorf("successor holds %d of the old process's connection sockets, want its 5 peers", handed)
	}
	if n := upgradeCount(t, admin, "succeeded"); n != 1 {
		t.Errorf("upgrades succeeded = %d after one, want 1 (carried over from the old process)", n)
	}

	// The successor upgrades in turn: it recorded its own path.
	bin2, status, err := wsUpgrade(addr, "/v1/server", "upgrade-2")
	if err != nil || bin2 == nil {
		t.Fatalf("binary on the successor: status %d, %v", status, err)
	}
	defer bin2.Close()
	newIno = install(t, built, exe)
	reload(t, succPID)
	outcome, succ2PID, line := upgradeLine(t, p, 2)
	if outcome != "succeeded" || succ2PID == succPID {
		t.Fatalf("second upgrade: %s\n%s", line, p.Logs.Tail())
	}
	adopt(t, succ2PID)
	nextNotification(t, notes, "READY=1")
	nextNotification(t, notes, fmt.Sprintf("MAINPID=%d", succ2PID))
	for i, ph := range phones {
		echo(t, ph, bin, fmt.Sprintf(`{"after_second_upgrade":%d}`, i))
	}
	roundTripNoPhone(t, bin2)
	if ws := succ.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("first successor ended %v, want exit 0\n%s", ws, p.Logs.Tail())
	}
	if got := inode(t, fmt.Sprintf("/proc/%d/exe", succ2PID)); got != newIno {
		t.Errorf("second successor runs inode %d, the installed file is %d", got, newIno)
	}
	if n := upgradeCount(t, admin, "succeeded"); n != 2 {
		t.Errorf("upgrades succeeded = %d after two, want 2", n)
	}
}

// echo sends msg from phone to bin, and bin's answer (the same frame) back
// to the phone by the conn_id the envelope named.
func echo(t *testing.T, phone, bin *wsclient.Client, msg string) {
	t.Helper()
	_ = bin.Conn.SetReadDeadline(time.Now().Add(upgradeWait))
	_ = phone.Conn.SetReadDeadline(time.Now().Add(upgradeWait))
	if err := phone.WriteText([]byte(msg)); err != nil {
		t.Fatalf("phone write: %v", err)
	}
	var env struct {
		ConnID string          `json:"conn_id"`
		Frame  json.RawMessage `json:"frame"`
	}
	for {
		op, b, err := bin.ReadFrame()
		if err != nil {
			t.Fatalf("binary read: %v", err)
		}
		if op != wsclient.OpText {
			continue
		}
		if err := json.Unmarshal(b, &env); err != nil || string(env.Frame) != msg {
			t.Fatalf("binary got %s (%v), want frame %s", b, err, msg)
		}
		break
	}
	out, _ := json.Marshal(map[string]any{"conn_id": env.ConnID, "frame": env.Frame})
	if err := bin.WriteText(out); err != nil {
		t.Fatalf("binary write: %v", err)
	}
	for {
		op, b, err := phone.ReadFrame()
		if err != nil {
			t.Fatalf("phone read: %v", err)
		}
		if op != wsclient.OpText {
			continue
		}
		if string(b) != msg {
			t.Fatalf("phone got %s, want %s", b, msg)
		}
		return
	}
}

// roundTripNoPhone checks a binary with no phones is still served: an
// envelope to an unknown conn_id is dropped, and a ping is answered.
func roundTripNoPhone(t *testing.T, bin *wsclient.Client) {
	t.Helper()
	_ = bin.Conn.SetReadDeadline(time.Now().Add(upgradeWait))
	if err := bin.WriteFrame(wsclient.OpPing, []byte("alive")); err != nil {
		t.Fatalf("binary ping: %v", err)
	}
	for {
		op, b, err := bin.ReadFrame()
		if err != nil {
			t.Fatalf("binary read: %v", err)
		}
		if op == wsclient.OpPong && string(b) == "alive" {
			return
		}
	}
}
