package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"switchboard/internal/relaytest"
	"switchboard/internal/wsclient"
)

// upgradeLoadEnv scales the connection handover tests: how many binaries,
// each with 15 phones, 16 connections in all (the default, 16, gives 256;
// 63 gives 1,008 and 1,125 gives 18,000, how docs/performance.md's pause
// figures were measured).
const upgradeLoadEnv = "RELAYTEST_UPGRADE_BINARIES" // not SWITCHBOARD_: the relay refuses unknown variables of that prefix

// traffic is sequence-numbered echo traffic through the relay: each phone
// sends {"s":k} with k counting up, its binary echoes each envelope back
// to the conn_id it names, and both ends check every k arrives once, in
// order. Any read or write error is a connection the upgrade broke.
type traffic struct {
	stop    atomic.Bool
	wg      sync.WaitGroup // the binaries' read loops
	phoneWG sync.WaitGroup // the phones' loops: each ends after the round trip it is in
	mu      sync.Mutex
	errs    []string
	echoed  atomic.Int64 // round trips completed
	phones  []*trafficPhone
	binList []*wsclient.Client
}

type trafficPhone struct {
	id   int
	c    *wsclient.Client
	sent int64 // frames sent = frames echoed back in order, once stopped
	got  atomic.Int64
}

func (tr *traffic) fail(format string, args ...any) {
	tr.mu.Lock()
	if len(tr.errs) < 20 {
		tr.errs = append(tr.errs, fmt.Sprintf(format, args...))
	}
	tr.mu.Unlock()
}

// startTraffic connects binaries × phonesEach and starts the traffic.
func startTraffic(t *testing.T, addr string, binaries, phonesEach int) *traffic {
	t.Helper()
	tr := &traffic{}
	for b := range binaries {
		sid := fmt.Sprintf("load-%d", b)
		bin, status, err := wsUpgrade(addr, "/v1/server", sid)
		if err != nil || bin == nil {
			t.Fatalf("binary %s: status %d, %v", sid, status, err)
		}
		tr.binList = append(tr.binList, bin)
		for range phonesEach {
			ph, status, err := wsUpgrade(addr, "/v1/client", sid)
			if err != nil || ph == nil {
				t.Fatalf("phone of %s: status %d, %v", sid, status, err)
			}
			tr.phones = append(tr.phones, &trafficPhone{id: len(tr.phones) + 1, c: ph})
		}
	}
	for _, bin := range tr.binList {
		tr.wg.Add(1)
		go tr.runBinary(bin)
	}
	for _, p := range tr.phones {
		tr.phoneWG.Add(1)
		go tr.runPhone(p)
	}
	return tr
}

// trafficPatience bounds any one read: far longer than an upgrade's pause.
const trafficPatience = 20 * time.Second

func (tr *traffic) runBinary(bin *wsclient.Client) {
	defer tr.wg.Done()
	last := map[string]int64{}
	who := map[string]int{}
	hist := map[string][]int64{}
	var env struct {
		ConnID string `json:"conn_id"`
		Frame  struct {
			S int64 `json:"s"`
			P int   `json:"p"`
		} `json:"frame"`
	}
	for {
		_ = bin.Conn.SetReadDeadline(time.Now().Add(trafficPatience))
		op, b, err := bin.ReadFrame()
		if err != nil {
			if !tr.stop.Load() {
				tr.fail("binary read: %v", err)
			}
			return
		}
		if op != wsclient.OpText {
			continue
		}
		env.ConnID, env.Frame.S, env.Frame.P = "", 0, 0
		if err := json.Unmarshal(b, &env); err != nil {
			tr.fail("binary got %q: %v", b, err)
			return
		}
		if env.Frame.S == 0 { // a close notice: a phone left
			if !tr.stop.Load() {
				tr.fail("binary: a phone left during the traffic: %s", b)
			}
			continue
		}
		hist[env.ConnID] = append(hist[env.ConnID], env.Frame.S)
		if w, ok := who[env.ConnID]; ok && w != env.Frame.P {
			tr.fail("binary: %s carried phone %d's frames, now phone %d's (crossed)", env.ConnID, w, env.Frame.P)
		}
		who[env.ConnID] = env.Frame.P
		if want := last[env.ConnID] + 1; env.Frame.S != want {
			h := hist[env.ConnID]
			tr.fail("binary: %s sent %d after %d (lost, duplicated or reordered) %v", env.ConnID, env.Frame.S, want-1, h[max(0, len(h)-8):])
		}
		last[env.ConnID] = env.Frame.S
		out := fmt.Appendf(nil, `{"conn_id":%q,"frame":{"s":%d,"p":%d}}`, env.ConnID, env.Frame.S, env.Frame.P)
		if err := bin.WriteText(out); err != nil {
			if !tr.stop.Load() {
				tr.fail("binary write: %v", err)
			}
			return
		}
	}
}

func (tr *traffic) runPhone(p *trafficPhone) {
	defer tr.phoneWG.Done()
	var echo struct {
		S int64 `json:"s"`
		P int   `json:"p"`
	}
	for !tr.stop.Load() {
		p.sent++
		if err := p.c.WriteText([]byte(`{"s":` + strconv.FormatInt(p.sent, 10) + `,"p":` + strconv.Itoa(p.id) + `}`)); err != nil {
			tr.fail("phone write: %v", err)
			return
		}
		for {
			_ = p.c.Conn.SetReadDeadline(time.Now().Add(trafficPatience))
			op, b, err := p.c.ReadFrame()
			if err != nil {
				tr.fail("phone read (after sending %d): %v", p.sent, err)
				return
			}
			if op != wsclient.OpText {
				continue
			}
			if err := json.Unmarshal(b, &echo); err != nil || echo.S != p.sent || echo.P != p.id {
				tr.fail("phone %d got %q, want {\"s\":%d} (lost, duplicated, reordered or crossed)", p.id, b, p.sent)
				return
			}
			p.got.Store(echo.S)
			tr.echoed.Add(1)
			break
		}
	}
}

// waitEchoes waits until n more round trips have completed.
func (tr *traffic) waitEchoes(t *testing.T, n int64) {
	t.Helper()
	target := tr.echoed.Load() + n
	deadline := time.Now().Add(trafficPatience)
	for tr.echoed.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("traffic stalled at %d round trips, want %d; errors: %v", tr.echoed.Load(), target, tr.errors())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (tr *traffic) errors() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.errs...)
}

// snapshotGot is how far each phone's echoes had come.
func (tr *traffic) snapshotGot() []int64 {
	out := make([]int64, len(tr.phones))
	for i, p := range tr.phones {
		out[i] = p.got.Load()
	}
	return out
}

// finish stops the traffic and checks nothing broke, and that every phone
// completed round trips after since (each conn_id still routes).
func (tr *traffic) finish(t *testing.T, since []int64) {
	t.Helper()
	tr.stop.Store(true)
	phonesDone := make(chan struct{})
	go func() { tr.phoneWG.Wait(); close(phonesDone) }()
	select { // each phone ends after the round trip it is in
	case <-phonesDone:
	case <-time.After(trafficPatience):
		t.Fatalf("phones did not finish their round trips; errors: %v", tr.errors())
	}
	for _, p := range tr.phones {
		p.c.Close()
	}
	for _, b := range tr.binList {
		b.Close()
	}
	done := make(chan struct{})
	go func() { tr.wg.Wait(); close(done) }() // binaries end on their connection's close
	select {
	case <-done:
	case <-time.After(trafficPatience):
		t.Fatalf("traffic goroutines did not end")
	}
	if errs := tr.errors(); len(errs) > 0 {
		t.Fatalf("traffic broke: %d errors, first: %s", len(errs), strings.Join(errs, "; "))
	}
	for i, p := range tr.phones {
		if p.got.Load() <= since[i] {
			t.Errorf("phone %d: no round trip after the upgrade (echoed up to %d)", i, p.got.Load())
		}
	}
}

func loadBinaries(def int) int {
	if n, err := strconv.Atoi(os.Getenv(upgradeLoadEnv)); err == nil && n > 0 {
		return n
	}
	return def
}

var pauseRe = regexp.MustCompile(`connections_handed=(\d+) pause=(\S+) quiesce=(\S+)`)

// A live upgrade under continuous traffic hands every connection over: none
// closes, no frame is lost, duplicated or reordered, every conn_id still
// routes, healthz counts are unchanged, and the successor runs the new file.
func TestUpgradeHandsOverEveryConnectionUnderTraffic(t *testing.T) {
	if err := subreaper(); err != nil {
		t.Skipf("cannot become a subreaper to wait for successors: %v", err)
	}
	binaries, phonesEach := loadBinaries(16), 15 // 256 connections
	built := relaytest.Build(t, "switchboard/cmd/switchboard")
	exe := filepath.Join(t.TempDir(), "switchboard")
	install(t, built, exe)
	addr, admin := relaytest.FreeAddr(t), relaytest.FreeAddr(t)
	p := relaytest.Exec(t, relaytest.Command{Path: exe, SharedOutput: true, StopGrace: 5 * time.Second, Env: relaytest.CleanEnv(),
		Args: []string{"--listen", addr, "--admin-listen", admin, "--rate-limit-burst", "0", "--phones-per-server", "16"}})
	p.WaitListening(t, relaytest.StartTimeout)
	oldPID := p.Cmd.Process.Pid
	tr := startTraffic(t, addr, binaries, phonesEach)
	tr.waitEchoes(t, int64(len(tr.phones)*3))
	st, b0, ph0 := healthCounts(t, addr)
	if st != "ok" || b0 != binaries || ph0 != binaries*phonesEach {
		t.Fatalf("healthz before: %s %d %d", st, b0, ph0)
	}

	newIno := install(t, built, exe)
	reload(t, oldPID)
	outcome, succPID, line := upgradeLine(t, p, 1)
	if outcome != "succeeded" {
		t.Fatalf("upgrade: %s\n%s", line, p.Logs.Tail())
	}
	succ := adopt(t, succPID)
	m := pauseRe.FindStringSubmatch(line)
	if m == nil || m[1] != strconv.Itoa(binaries*(phonesEach+1)) {
		t.Fatalf("upgrade line does not count %d connections handed over: %s", binaries*(phonesEach+1), line)
	}
	t.Logf("%s connections handed over: pause %s (quiet after %s)", m[1], m[2], m[3])
	select {
	case <-p.Exited():
		if err := p.Err(); err != nil {
			t.Fatalf("old process exit: %v, want 0\n%s", err, p.Logs.Tail())
		}
	case <-time.After(upgradeWait):
		t.Fatalf("old process still running after the upgrade\n%s", p.Logs.Tail())
	}
	since := tr.snapshotGot()
	tr.waitEchoes(t, int64(len(tr.phones)*3))
	if st, b, ph := healthCounts(t, addr); st != "ok" || b != b0 || ph != ph0 {
		t.Errorf("healthz from the successor: %s, %d binaries, %d phones; want ok, %d, %d", st, b, ph, b0, ph0)
	}
	if got := inode(t, fmt.Sprintf("/proc/%d/exe", succPID)); got != newIno {
		t.Errorf("successor runs inode %d, the installed file is %d", got, newIno)
	}
	// The successor's /metrics (it holds the admin listener now) counts the
	// connections it adopted and the pause they saw.
	fams := scrape(t, http.DefaultClient, "http://"+admin+"/metrics")
	if f := fams["switchboard_upgrade_connections_handed_total"]; f == nil || len(f.Samples) != 1 || int(f.Samples[0].Value) != binaries*(phonesEach+1) {
		t.Errorf("switchboard_upgrade_connections_handed_total: %+v, want %d", f, binaries*(phonesEach+1))
	}
	if f := fams["switchboard_upgrade_pause_seconds"]; f == nil || len(f.Samples) != 1 || f.Samples[0].Value <= 0 || f.Samples[0].Value > upgradeWait.Seconds() {
		t.Errorf("switchboard_upgrade_pause_seconds: %+v, want in (0, %s]", f, upgradeWait)
	}
	tr.finish(t, since)
	if n := strings.Count(p.Logs.Tail(), "msg=closing"); n != 0 {
		t.Errorf("%d closes logged", n)
	}
	_ = succ
}

// A successor that dies, or hangs, holding the connections' sockets before
// it reads them rolls the upgrade back: the old process serves every
// connection on, nothing lost.
func TestUpgradeRollsBackWhenTheSuccessorDiesMidHandover(t *testing.T) {
	_, exe := upgradable(t)
	for i, fault := range []string{"exit-holding-conns", "hang-holding-conns", "exit-after-adopt"} {
		t.Run(fault, func(t *testing.T) {
			addr := relaytest.FreeAddr(t)
			p := relaytest.Exec(t, relaytest.Command{Path: exe, SharedOutput: true, StopGrace: 5 * time.Second,
				Env:  append(relaytest.CleanEnv(), upgradeFaultEnv+"="+fault),
				Args: []string{"--listen", addr, "--admin-listen", "", "--rate-limit-burst", "0", "--upgrade-timeout", "2s"}})
			p.WaitListening(t, relaytest.StartTimeout)
			tr := startTraffic(t, addr, 8, 8)
			tr.waitEchoes(t, int64(len(tr.phones)*3))
			reload(t, p.Cmd.Process.Pid)
			outcome, _, line := upgradeLine(t, p, 1)
			if outcome != "rolled_back" {
				t.Fatalf("%s: %s", fault, line)
			}
			_ = i
			since := tr.snapshotGot()
			tr.waitEchoes(t, int64(len(tr.phones)*3))
			if st, b, ph := healthCounts(t, addr); st != "ok" || b != 8 || ph != 64 {
				t.Errorf("healthz after the rollback: %s, %d, %d; want ok, 8, 64", st, b, ph)
			}
			tr.finish(t, since)
			select {
			case <-p.Exited():
				t.Fatalf("old process exited: %v", p.Err())
			default:
			}
		})
	}
}

// Grace windows cross an upgrade: a departed binary's slot and phones are
// handed over with the time left, so a binary reclaiming after the upgrade
// reclaims that window (its phones are closed 4404, as on any reclaim),
// and an unclaimed window ends in the successor when it would have ended
// in the old process.
func TestUpgradeCarriesGraceWindows(t *testing.T) {
	if err := subreaper(); err != nil {
		t.Skipf("cannot become a subreaper to wait for successors: %v", err)
	}
	const grace = 3 * time.Second
	built := relaytest.Build(t, "switchboard/cmd/switchboard")
	exe := filepath.Join(t.TempDir(), "switchboard")
	install(t, built, exe)
	addr := relaytest.FreeAddr(t)
	p := relaytest.Exec(t, relaytest.Command{Path: exe, SharedOutput: true, StopGrace: 5 * time.Second, Env: relaytest.CleanEnv(),
		Args: []string{"--listen", addr, "--admin-listen", "", "--rate-limit-burst", "0", "--grace-period", grace.String()}})
	p.WaitListening(t, relaytest.StartTimeout)
	dial := func(path, sid string) *wsclient.Client {
		c, status, err := wsUpgrade(addr, path, sid)
		if err != nil || c == nil {
			t.Fatalf("%s %s: status %d, %v", path, sid, status, err)
		}
		return c
	}
	binA, phoneA := dial("/v1/server", "grace-a"), dial("/v1/client", "grace-a")
	defer phoneA.Close()
	binB, phoneB := dial("/v1/server", "grace-b"), dial("/v1/client", "grace-b")
	defer phoneB.Close()
	echo(t, phoneA, binA, `{"before":1}`)
	echo(t, phoneB, binB, `{"before":2}`)
	binA.Close()
	binB.Close()
	left := time.Now()
	if _, ok := p.Logs.WaitLine(p.Exited(), upgradeWait, func(l string) bool {
		return strings.Contains(l, `msg="grace started" server_id=grace-b`)
	}); !ok {
		t.Fatalf("no grace window for grace-b:\n%s", p.Logs.Tail())
	}
	if _, ok := p.Logs.WaitLine(p.Exited(), upgradeWait, func(l string) bool {
		return strings.Contains(l, `msg="grace started" server_id=grace-a`)
	}); !ok {
		t.Fatalf("no grace window for grace-a:\n%s", p.Logs.Tail())
	}
	install(t, built, exe)
	reload(t, p.Cmd.Process.Pid)
	outcome, succPID, line := upgradeLine(t, p, 1)
	if outcome != "succeeded" || !strings.Contains(line, "connections_handed=2") {
		t.Fatalf("upgrade: %s\n%s", line, p.Logs.Tail())
	}
	adopt(t, succPID)
	select { // the old process is gone, its connections the successor's
	case <-p.Exited():
	case <-time.After(upgradeWait):
		t.Fatalf("old process still running after the upgrade\n%s", p.Logs.Tail())
	}
	if st, b, ph := healthCounts(t, addr); st != "ok" || b != 0 || ph != 2 {
		t.Errorf("healthz from the successor: %s, %d binaries, %d phones; want ok, 0, 2 (both slots in grace)", st, b, ph)
	}
	// A reclaims in the successor: the window was there, phones and all.
	binA2 := dial("/v1/server", "grace-a")
	defer binA2.Close()
	if code, reason, err := readClose(phoneA); err != nil || code != 4404 {
		t.Errorf("phone of grace-a: close %d %q, %v; want 4404 for the reclaimed window", code, reason, err)
	}
	// B's window ends in the successor, on time: its phone gets 1000.
	_ = phoneB.Conn.SetReadDeadline(time.Now().Add(grace + upgradeWait))
	code, _, err := phoneB.ReadClose()
	away := time.Since(left)
	if err != nil || code != 1000 {
		t.Fatalf("phone of grace-b: close %d, %v; want 1000 when the grace window ends", code, err)
	}
	if away < grace-500*time.Millisecond || away > grace+2*time.Second {
		t.Errorf("grace-b's window ended %v after its binary left, want about %v", away, grace)
	}
}

// An upgrade during a takeover probe rolls back (the probe's outcome is
// decided by a pong and a timer the snapshot would carry half-done), and
// the probe then ends as it would have; the next reload upgrades.
func TestUpgradeWaitsOutATakeoverProbe(t *testing.T) {
	_, exe := upgradable(t)
	addr := relaytest.FreeAddr(t)
	p := relaytest.Exec(t, relaytest.Command{Path: exe, SharedOutput: true, StopGrace: 5 * time.Second, Env: relaytest.CleanEnv(),
		Args: []string{"--listen", addr, "--admin-listen", "", "--rate-limit-burst", "0", "--takeover-timeout", "20s"}})
	p.WaitListening(t, relaytest.StartTimeout)
	holder, status, err := wsUpgrade(addr, "/v1/server", "probe-1")
	if err != nil || holder == nil {
		t.Fatalf("holder: status %d, %v", status, err)
	}
	defer holder.Close()
	phone, status, err := wsUpgrade(addr, "/v1/client", "probe-1")
	if err != nil || phone == nil {
		t.Fatalf("phone: status %d, %v", status, err)
	}
	defer phone.Close()
	type dialed struct {
		c      *wsclient.Client
		status int
		err    error
	}
	rival := make(chan dialed, 1)
	go func() { // its 101 waits for the probe's outcome
		c, status, err := wsUpgrade(addr, "/v1/server", "probe-1")
		rival <- dialed{c, status, err}
	}()
	// The probe's ping reaches the holder: the probe is in flight.
	_ = holder.Conn.SetReadDeadline(time.Now().Add(upgradeWait))
	f, err := holder.NextFrame()
	if err != nil || f.Op != wsclient.OpPing {
		t.Fatalf("holder: frame %v, %v; want the probe's ping", f.Op, err)
	}
	reload(t, p.Cmd.Process.Pid)
	if outcome, _, line := upgradeLine(t, p, 1); outcome != "rolled_back" || !strings.Contains(line, "takeover probe") {
		t.Fatalf("upgrade during a probe: %s", line)
	}
	// The holder answers: the rival is refused, the holder keeps the slot.
	if err := holder.WriteFrame(wsclient.OpPong, f.Payload); err != nil {
		t.Fatal(err)
	}
	d := <-rival
	if d.err != nil || d.c == nil {
		t.Fatalf("rival: status %d, %v", d.status, d.err)
	}
	if code, _, err := readClose(d.c); err != nil || code != 4409 {
		t.Errorf("rival: close %d, %v; want 4409 (the holder answered the probe)", code, err)
	}
	d.c.Close()
	reload(t, p.Cmd.Process.Pid)
	outcome, succPID, line := upgradeLine(t, p, 2)
	if outcome != "succeeded" {
		t.Fatalf("upgrade after the probe: %s", line)
	}
	adopt(t, succPID)
	select { // the old process is gone, its connections the successor's
	case <-p.Exited():
	case <-time.After(upgradeWait):
		t.Fatalf("old process still running after the upgrade\n%s", p.Logs.Tail())
	}
	echo(t, phone, holder, `{"after":"probe"}`)
}
