package relaytest

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// StartTimeout bounds how long Switchboard waits for the relay to listen.
const StartTimeout = 20 * time.Second

// builds holds what Build compiled: one directory for the whole test
// binary, so each command is built once however many tests run it.
var builds struct {
	mu   sync.Mutex
	main bool // Main runs the tests, and removes dir after them
	dir  string
	bins map[string]*built
}

type built struct {
	once sync.Once
	path string
	err  error
}

// Main runs the tests and then removes what Build compiled. A package
// whose tests call Build calls it from TestMain.
func Main(m *testing.M) {
	builds.mu.Lock()
	builds.main = true
	builds.mu.Unlock()
	code := m.Run()
	builds.mu.Lock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	builds.mu.Unlock()
	os.Exit(code)
}

// Build compiles the main package pkg (an import path, such as
// "switchboard/cmd/switchboard") once per test binary and returns the
// executable's path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	builds.mu.Lock()
	if !builds.main {
		builds.mu.Unlock()
		t.Fatal("relaytest.Build: the package's TestMain must call relaytest.Main, which removes what Build leaves")
	}
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "relaytest-")
		if err != nil {
			builds.mu.Unlock()
			t.Fatal(err)
		}
		builds.dir, builds.bins = dir, map[string]*built{}
	}
	b := builds.bins[pkg]
	if b == nil {
		b = &built{path: filepath.Join(builds.dir, path.Base(pkg))}
		builds.bins[pkg] = b
	}
	builds.mu.Unlock()
	b.once.Do(func() {
		// go test puts the go command that runs it on PATH.
		goTool, err := exec.LookPath("go")
		if err != nil {
			b.err = fmt.Errorf("building %s: %w", pkg, err)
			return
		}
		if out, err := exec.Command(goTool, "build", "-o", b.path, pkg).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Command is a process to run for a test.
type Command struct {
	Path string
	Args []string
	// Env is the process's environment; nil means this process's (see
	// CleanEnv).
	Env []string
	// Tee, when non-nil, also gets everything the process writes.
	Tee io.Writer
	// SharedOutput gives the process an os.Pipe for stdout and stderr
	// instead of os/exec's copying: os/exec waits for every holder of its
	// pipe to close it, so a process whose children inherit its output (a
	// live upgrade's successor) would not count as exited until they did.
	// With it, Exited fires at the process's own exit and its children's
	// lines keep arriving in Logs.
	SharedOutput bool
	// StopGrace is how the end of the test stops a process still running:
	// zero kills it; otherwise it gets SIGTERM and this long to exit.
	StopGrace time.Duration
}

// Process is a running command. Its stdout and stderr both go to Logs.
type Process struct {
	Cmd  *exec.Cmd
	Logs *LogSink
	// Addr is where a relay listens, once WaitListening has returned.
	Addr string

	exited chan struct{} // closed once err is set
	err    error
}

// Exec starts c and stops it when the test ends, if it has not exited.
func Exec(t testing.TB, c Command) *Process {
	t.Helper()
	p := &Process{Cmd: exec.Command(c.Path, c.Args...), Logs: &LogSink{}, exited: make(chan struct{})}
	var out io.Writer = p.Logs
	if c.Tee != nil {
		out = io.MultiWriter(p.Logs, c.Tee)
	}
	p.Cmd.Env, p.Cmd.Stdout, p.Cmd.Stderr = c.Env, out, out
	var pw *os.File
	if c.SharedOutput {
		pr, w, err := os.Pipe()
		if err != nil {
			t.Fatalf("output pipe for %s: %v", c.Path, err)
		}
		pw, p.Cmd.Stdout, p.Cmd.Stderr = w, w, w
		go func() { _, _ = io.Copy(out, pr); pr.Close() }()
	}
	err := p.Cmd.Start()
	if pw != nil {
		pw.Close() // the process and its children hold the write end now
	}
	if err != nil {
		t.Fatalf("starting %s: %v", c.Path, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if c.StopGrace > 0 {
			p.Stop(c.StopGrace)
		} else {
			p.Kill()
		}
	})
	return p
}

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err waits for the process to exit and returns what waiting returned: nil
// for exit status 0.
func (p *Process) Err() error {
	<-p.exited
	return p.err
}

// Kill ends the process with SIGKILL, unless it has exited, and waits for it.
func (p *Process) Kill() {
	select {
	case <-p.exited:
	default:
		_ = p.Cmd.Process.Kill()
		<-p.exited
	}
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then
// kills it.
func (p *Process) Stop(grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.Kill()
	}
}

// WaitListening waits up to timeout for the relay's "listening" log line
// and returns (and sets Addr to) the address it names.
func (p *Process) WaitListening(t testing.TB, timeout time.Duration) string {
	t.Helper()
	name := filepath.Base(p.Cmd.Path)
	line, ok := p.Logs.WaitLine(p.exited, timeout, func(l string) bool { return strings.Contains(l, "msg=listening") })
	if !ok {
		select {
		case <-p.exited:
			t.Fatalf("%s exited before listening: %v\n%s", name, p.err, p.Logs.Tail())
		default:
			t.Fatalf("%s not listening after %v:\n%s", name, timeout, p.Logs.Tail())
		}
	}
	for _, f := range strings.Fields(line) {
		if addr, ok := strings.CutPrefix(f, "addr="); ok {
			p.Addr = addr
			return addr
		}
	}
	t.Fatalf("%s: no address in %q", name, line)
	return ""
}

// Switchboard builds the relay command (once per test binary), runs it with
// args and a CleanEnv, so args alone configure it, and waits until it
// listens.
func Switchboard(t testing.TB, args ...string) *Process {
	t.Helper()
	p := Exec(t, Command{Path: Build(t, "switchboard/cmd/switchboard"), Args: args, Env: CleanEnv()})
	p.WaitListening(t, StartTimeout)
	return p
}

// CleanEnv is this process's environment without SWITCHBOARD_ variables:
// a developer's settings must not reach a relay under test.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			env = append(env, kv)
		}
	}
	return env
}

// FreeAddr returns a loopback host:port nobody was listening on a moment
// ago, and never the same one twice in a test binary: a test takes several
// before starting anything on them. The port is picked below the ephemeral
// range when there is room, so that no outgoing connection can take it
// between a relay's exit and its restart on the same port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	handedOut.mu.Lock()
	defer handedOut.mu.Unlock()
	if handedOut.addrs == nil {
		handedOut.addrs = map[string]bool{}
	}
	// take listens on addr once and keeps the address if it is new.
	take := func(addr string) (string, bool) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return "", false
		}
		addr = ln.Addr().String()
		ln.Close()
		if handedOut.addrs[addr] {
			return "", false
		}
		handedOut.addrs[addr] = true
		return addr, true
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if lo, err := strconv.Atoi(f[0]); err == nil && lo > 12000 {
				for range 100 {
					if addr, ok := take(net.JoinHostPort("127.0.0.1", strconv.Itoa(10000+rand.IntN(lo-10000)))); ok {
						return addr
					}
				}
			}
		}
	}
	for range 100 {
		if addr, ok := take("127.0.0.1:0"); ok {
			return addr
		}
	}
	t.Fatal("relaytest.FreeAddr: no free loopback port")
	return ""
}

var handedOut struct {
	mu    sync.Mutex
	addrs map[string]bool
}
