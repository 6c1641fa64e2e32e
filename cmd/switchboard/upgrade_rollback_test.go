package main

// A successor that fails never costs the old process a connection: it
// keeps accepting throughout, kills what it started and counts the
// rollback (docs/operations.md, Upgrading).

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"switchboard/internal/relaytest"
)

func TestUpgradeRollsBackWhenTheSuccessorFails(t *testing.T) {
	built, exe := upgradable(t)
	addr, admin := relaytest.FreeAddr(t), relaytest.FreeAddr(t)
	const timeout = time.Second // short, so the test waits it out; the hung successor below needs it whole
	p := relaytest.Exec(t, relaytest.Command{Path: exe, SharedOutput: true, StopGrace: 5 * time.Second, Env: relaytest.CleanEnv(),
		Args: []string{"--listen", addr, "--admin-listen", admin, "--rate-limit-burst", "0", "--upgrade-timeout", timeout.String()}})
	p.WaitListening(t, relaytest.StartTimeout)
	pid := p.Cmd.Process.Pid
	bin, status, err := wsUpgrade(addr, "/v1/server", "rollback-1")
	if err != nil || bin == nil {
		t.Fatalf("binary: status %d, %v", status, err)
	}
	defer bin.Close()
	phone, status, err := wsUpgrade(addr, "/v1/client", "rollback-1")
	if err != nil || phone == nil {
		t.Fatalf("phone: status %d, %v", status, err)
	}
	defer phone.Close()
	roundTrip(t, phone, bin, `{"n":1}`)
	d := startDialer(addr)

	// 1: the new file exits at once.
	installBytes(t, []byte("#!/bin/sh\nexit 1\n"), exe)
	reload(t, pid)
	if outcome, _, line := upgradeLine(t, p, 1); outcome != "rolled_back" || !strings.Contains(line, "exit status 1") && !strings.Contains(line, "handover") {
		t.Fatalf("successor exiting 1: %s", line)
	}
	roundTrip(t, phone, bin, `{"n":2}`)

	// 2: the new file never answers; a second SIGUSR2 while it hangs is
	// ignored; past --upgrade-timeout it is killed.
	installBytes(t, []byte("#!/bin/sh\necho hung-successor-started >&2\nexec sleep 60\n"), exe)
	start := time.Now()
	reload(t, pid)
	if _, ok := p.Logs.WaitLine(p.Exited(), upgradeWait, func(l string) bool { return strings.Contains(l, "hung-successor-started") }); !ok {
		t.Fatalf("the hung successor never started:\n%s", p.Logs.Tail())
	}
	reload(t, pid)
	if _, ok := p.Logs.WaitLine(p.Exited(), upgradeWait, func(l string) bool {
		return strings.Contains(l, `msg="signal ignored" signal=SIGUSR2 why="an upgrade is already running"`)
	}); !ok {
		t.Fatalf("no line for the second SIGUSR2:\n%s", p.Logs.Tail())
	}
	outcome, hung, line := upgradeLine(t, p, 2)
	if outcome != "rolled_back" || !strings.Contains(line, "no READY within --upgrade-timeout 1s") {
		t.Fatalf("hung successor: %s", line)
	}
	if took := time.Since(start); took < timeout {
		t.Errorf("rolled back after %v, before --upgrade-timeout %v", took, timeout)
	}
	if err := syscall.Kill(hung, 0); err == nil {
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", hung)); !strings.Contains(string(st), ") Z ") {
			t.Errorf("hung successor %d still running after the rollback", hung)
		}
	}
	if _, ok := p.Logs.Line(func(l string) bool {
		return strings.Contains(l, `msg="upgrade finished"`) && strings.Contains(l, "outcome=succeeded")
	}); ok {
		t.Fatalf("an upgrade line says succeeded:\n%s", p.Logs.Tail())
	}

	// The old process serves as before: same connections, same counts,
	// every dial answered; two rollbacks counted.
	roundTrip(t, phone, bin, `{"n":3}`)
	if st, b, ph := healthCounts(t, addr); st != "ok" || b != 1 || ph != 1 {
		t.Errorf("healthz after the rollbacks: %s, %d binaries, %d phones; want ok, 1, 1", st, b, ph)
	}
	if n := upgradeCount(t, admin, "rolled_back"); n != 2 {
		t.Errorf("upgrades rolled back = %d, want 2", n)
	}
	if n := upgradeCount(t, admin, "succeeded"); n != 0 {
		t.Errorf("upgrades succeeded = %d, want 0", n)
	}
	d.finish(t)
	select {
	case <-p.Exited():
		t.Fatalf("old process exited: %v\n%s", p.Err(), p.Logs.Tail())
	default:
	}

	// And a good file then upgrades as usual.
	install(t, built, exe)
	reload(t, pid)
	outcome, succ, line := upgradeLine(t, p, 3)
	if outcome != "succeeded" {
		t.Fatalf("upgrade after the rollbacks: %s", line)
	}
	adopt(t, succ)
	echo(t, phone, bin, `{"n":4}`) // handed over, not drained
	if st, b, ph := healthCounts(t, addr); st != "ok" || b != 1 || ph != 1 {
		t.Errorf("healthz from the successor: %s, %d binaries, %d phones; want ok, 1, 1", st, b, ph)
	}
}

// A successor that cannot read the hello's format says so in its answer
// and on stderr, and exits non-zero: the old process rolls back.
func TestSuccessorRefusesAnUnknownHandoverFormat(t *testing.T) {
	exe := relaytest.Build(t, "switchboard/cmd/switchboard")
	ours, theirs, err := handoverPair()
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command(exe, "--listen", ln.Addr().String(), "--admin-listen", "", "--upgrade-fd=3")
	cmd.Env = relaytest.CleanEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.ExtraFiles = []*os.File{theirs}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	if err := sendHello(ours, hello{Format: handoverFormat + 98, FromPID: os.Getpid(), Listeners: []string{listenerMain}}, []int{int(lf.Fd())}); err != nil {
		t.Fatal(err)
	}
	a, err := readAnswer(ours, time.Now().Add(upgradeWait))
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	want := fmt.Sprintf("handover format %d from pid %d, this build reads only format %d", handoverFormat+98, os.Getpid(), handoverFormat)
	if a.Ready || a.Error != want {
		b, _ := json.Marshal(a)
		t.Errorf("answer %s, want the error %q", b, want)
	}
	select {
	case err := <-exited:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
			t.Errorf("successor exit: %v, want non-zero", err)
		}
	case <-time.After(upgradeWait):
		t.Fatal("successor still running after refusing the hello")
	}
	if !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q does not say %q", stderr.String(), want)
	}
}

// With $NOTIFY_SOCKET a path, the relay says READY=1 there once it
// listens (Type=notify); the abstract form is in the upgrade test.
func TestNotifySocketPathGetsReady(t *testing.T) {
	name := filepath.Join(t.TempDir(), "notify")
	notes := notifications(t, name)
	p := relaytest.Exec(t, relaytest.Command{Path: relaytest.Build(t, "switchboard/cmd/switchboard"),
		Env:  append(relaytest.CleanEnv(), "NOTIFY_SOCKET="+name),
		Args: []string{"--listen", "127.0.0.1:0", "--admin-listen", ""}})
	p.WaitListening(t, relaytest.StartTimeout)
	nextNotification(t, notes, "READY=1")
}

// On a unix socket the file outlives the old process (the successor serves
// it) and goes with the successor's own exit, as without an upgrade.
func TestUpgradeKeepsTheUnixSocketFile(t *testing.T) {
	if err := subreaper(); err != nil {
		t.Skipf("cannot become a subreaper to wait for successors: %v", err)
	}
	sock := filepath.Join(t.TempDir(), "relay.sock")
	p := relaytest.Exec(t, relaytest.Command{Path: relaytest.Build(t, "switchboard/cmd/switchboard"), SharedOutput: true,
		StopGrace: 5 * time.Second, Env: relaytest.CleanEnv(),
		Args: []string{"--listen", "unix:" + sock, "--proxy-protocol", "--admin-listen", "", "--rate-limit-burst", "0"}})
	p.WaitListening(t, relaytest.StartTimeout)
	bin, _, err := unixWS(sock, proxyV2("198.51.100.7", 40000), "/v1/server", binaryHeader("unix-upgrade"))
	if err != nil {
		t.Fatalf("binary over the socket: %v", err)
	}
	defer bin.Close()
	reload(t, p.Cmd.Process.Pid)
	outcome, succPID, line := upgradeLine(t, p, 1)
	if outcome != "succeeded" {
		t.Fatalf("upgrade: %s", line)
	}
	succ := adopt(t, succPID)
	// Handed over, not drained: a ping still gets its pong.
	_ = bin.SetReadDeadline(time.Now().Add(upgradeWait))
	pong := make(chan string, 1)
	bin.SetPongHandler(func(s string) error { pong <- s; return nil })
	if err := bin.WriteControl(websocket.PingMessage, []byte("still-here"), time.Now().Add(upgradeWait)); err != nil {
		t.Fatalf("binary ping after the upgrade: %v", err)
	}
	go func() { _, _, _ = bin.ReadMessage() }()
	select {
	case s := <-pong:
		if s != "still-here" {
			t.Errorf("pong %q", s)
		}
	case <-time.After(upgradeWait):
		t.Errorf("binary: no pong after the upgrade")
	}
	select {
	case <-p.Exited():
		if err := p.Err(); err != nil {
			t.Fatalf("old process exit: %v, want 0", err)
		}
	case <-time.After(upgradeWait):
		t.Fatalf("old process still running\n%s", p.Logs.Tail())
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket file after the old process exited: %v, %v", fi, err)
	}
	bin2, _, err := unixWS(sock, proxyV2("198.51.100.7", 40001), "/v1/server", binaryHeader("unix-upgrade"))
	if err != nil {
		t.Fatalf("binary through the same file to the successor: %v", err)
	}
	bin2.Close()
	if err := syscall.Kill(succPID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if ws := succ.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("successor ended %v, want exit 0", ws)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file after the successor's exit: %v, want it removed", err)
	}
}
