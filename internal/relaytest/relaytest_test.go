package relaytest_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"switchboard/internal/relaytest"
	"switchboard/loop"
)

const testTimeout = 10 * time.Second

// helperEnv makes this test binary, run by Exec, play a relay process.
const helperEnv = "RELAYTEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		relaytest.Main(m)
	case "listen": // logs like the relay, exits 0 on SIGTERM
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		fmt.Fprint(os.Stderr, "level=INFO msg=\"admin listening\" addr=127.0.0.1:1\nlevel=INFO msg=listening addr=127.0.0.1:2 version=x\n")
		<-term
		os.Exit(0)
	case "deaf": // listens, and ignores SIGTERM
		signal.Ignore(syscall.SIGTERM)
		fmt.Fprint(os.Stdout, "msg=listening addr=127.0.0.1:3\n")
		select {}
	case "fail":
		fmt.Fprint(os.Stderr, "bad flag\n")
		os.Exit(3)
	}
}

func helper(t *testing.T, mode string, grace time.Duration) *relaytest.Process {
	return relaytest.Exec(t, relaytest.Command{Path: os.Args[0], Env: append(os.Environ(), helperEnv+"="+mode), StopGrace: grace})
}

func TestStartServesUntilTheTestEnds(t *testing.T) {
	var addr string
	t.Run("serving", func(t *testing.T) {
		r := relaytest.Start(t, loop.Config{})
		addr = r.Addr
		resp, err := http.Get("http://" + r.Addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || r.Live() != 0 {
			t.Fatalf("healthz %d, live %d", resp.StatusCode, r.Live())
		}
	})
	if c, err := net.DialTimeout("tcp", addr, testTimeout); err == nil {
		c.Close()
		t.Fatal("the relay still listens after its test ended")
	}
}

func TestLogSinkLinesAndWaits(t *testing.T) {
	var s relaytest.LogSink
	isDone := func(l string) bool { return strings.HasPrefix(l, "done") }
	got := make(chan string, 1)
	go func() {
		l, _ := s.WaitLine(nil, testTimeout, isDone)
		got <- l
	}()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fmt.Fprintf(&s, "writer %d\n", i)
		}()
	}
	wg.Wait()
	_, _ = s.Write([]byte("done wri"))
	if _, ok := s.Line(isDone); ok {
		t.Fatal("Line matched a line still missing its newline")
	}
	_, _ = s.Write([]byte("ting\nlater\n"))
	select {
	case l := <-got:
		if l != "done writing" {
			t.Fatalf("WaitLine returned %q", l)
		}
	case <-time.After(testTimeout):
		t.Fatal("WaitLine did not wake for the line")
	}
	if n := strings.Count(s.String(), "\n"); n != 10 {
		t.Fatalf("%d lines, want 10:\n%s", n, s.String())
	}
	if _, ok := s.WaitLine(nil, time.Millisecond, func(l string) bool { return l == "never" }); ok {
		t.Fatal("WaitLine found a line nobody wrote")
	}
	stop := make(chan struct{})
	close(stop)
	if l, ok := s.WaitLine(stop, testTimeout, func(l string) bool { return l == "later" }); !ok || l != "later" {
		t.Fatal("WaitLine with stop closed missed a line already written")
	}
	for i := range 30 {
		fmt.Fprintf(&s, "line %d\n", i)
	}
	if tail := s.Tail(); !strings.HasPrefix(tail, "line 10\n") || !strings.HasSuffix(tail, "line 29") {
		t.Fatalf("Tail:\n%s", tail)
	}
}

func TestExecWaitsForListeningAndStops(t *testing.T) {
	p := helper(t, "listen", testTimeout)
	if addr := p.WaitListening(t, testTimeout); addr != "127.0.0.1:2" || p.Addr != addr {
		t.Fatalf("WaitListening %q (Addr %q), want the main listener's address", addr, p.Addr)
	}
	p.Stop(testTimeout)
	if err := p.Err(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}

	d := helper(t, "deaf", time.Millisecond)
	if addr := d.WaitListening(t, testTimeout); addr != "127.0.0.1:3" {
		t.Fatalf("stdout listening line gave %q", addr)
	}
	d.Stop(50 * time.Millisecond) // ignores SIGTERM: killed
	var ee *exec.ExitError
	if err := d.Err(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("deaf process ended with %v, want SIGKILL", err)
	}

	f := helper(t, "fail", 0)
	<-f.Exited()
	if _, ok := f.Logs.Line(func(l string) bool { return l == "bad flag" }); !ok {
		t.Fatalf("logs %q", f.Logs.String())
	}
	if !errors.As(f.Err(), &ee) || ee.ExitCode() != 3 {
		t.Fatalf("exit %v, want status 3", f.Err())
	}
}

func TestCleanEnvDropsRelaySettings(t *testing.T) {
	t.Setenv("SWITCHBOARD_LISTEN", ":1")
	for _, kv := range relaytest.CleanEnv() {
		if strings.HasPrefix(kv, "SWITCHBOARD_") {
			t.Fatalf("CleanEnv kept %s", kv)
		}
	}
}

func TestFreeAddrIsLoopbackFreeAndNew(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		addr := relaytest.FreeAddr(t)
		if seen[addr] {
			t.Fatalf("FreeAddr handed out %s twice", addr)
		}
		seen[addr] = true
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("FreeAddr %s: %v", addr, err)
		}
		ln.Close()
	}
}
