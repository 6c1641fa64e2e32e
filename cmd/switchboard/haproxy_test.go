package main

// Scale-out behind HAProxy (deploy/): three
// relay nodes behind one HAProxy that hashes consistently on
// X-Pyrycode-Server and speaks PROXY protocol v2 to them. The test's clients
// behave like the real ones: a binary redials at once whenever its connection
// ends (keeping its server-id), a phone redials too. It shows that
//   (a) every pair routes through HAProxy, pairs spread over the nodes and
//       each phone lands on its binary's node;
//   (b) when a node dies its pairs come back through HAProxy on the
//       surviving nodes;
//   (c) when the node returns, the binary lifetime (1012) brings every moved
//       binary home and the grace window sends its phones after it, within
//       lifetime + grace + slack.
// Which node a connection reached comes from a header this test's HAProxy
// adds to the 101 (X-Switchboard-Node, the HAProxy server name); the nodes'
// /healthz counts confirm it from the relays' side.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"switchboard/internal/haproxycfg"
	"switchboard/internal/relaytest"
	"switchboard/internal/wsclient"
)

const (
	soNodes     = 3
	soPairs     = 20
	soPhones    = 2
	soLifetime  = 2 * time.Second
	soGrace     = 1 * time.Second
	soStartWait = 20 * time.Second // a process must be up within this
	soPhaseWait = 15 * time.Second // each phase must converge within this
	soRTTimeout = 2 * time.Second  // one round trip
	soTestLimit = 60 * time.Second // the whole test, build excluded
	nodeHeader  = "X-Switchboard-Node"
)

// soNode is one relay process; a restart replaces proc on the same port.
type soNode struct {
	name string // HAProxy's server name for it
	addr string
	proc *relaytest.Process
}

// startNode runs the relay on n.addr and waits until it listens.
func startNode(t *testing.T, n *soNode) {
	t.Helper()
	n.proc = relaytest.Switchboard(t, "--listen", n.addr, "--proxy-protocol", "--rate-limit-burst", "0",
		"--grace-period", soGrace.String(), "--binary-max-lifetime", soLifetime.String(), "--admin-listen", "")
}

// proxyV2Local is a PROXY protocol v2 header with the LOCAL command: the
// relay keeps the socket's own address (what HAProxy's health checks send).
var proxyV2Local = []byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")

type health struct {
	Binaries int `json:"connected_binaries"`
	Phones   int `json:"connected_phones"`
}

// nodeHealth asks a node (which requires PROXY v2) for /healthz directly.
func nodeHealth(addr string) (health, error) {
	var h health
	c, err := wsclient.DialTCP(addr, wsclient.Options{Timeout: time.Second})
	if err != nil {
		return h, err
	}
	defer c.Close()
	_ = c.Conn.SetDeadline(time.Now().Add(2 * time.Second))
	req := append(append([]byte(nil), proxyV2Local...), wsclient.Head("/healthz", "node", "Connection: close")...)
	if _, err := c.Conn.Write(req); err != nil {
		return h, err
	}
	resp, err := c.ReadResponse(nil)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return h, fmt.Errorf("healthz status %d", resp.StatusCode)
	}
	return h, json.NewDecoder(resp.Body).Decode(&h)
}

const soHAProxyConfig = `global
    maxconn 2000
    log stderr format raw local0 notice

defaults
    mode http
    log global
    option dontlognull
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    timeout http-request 5s
    timeout tunnel 90s
    timeout client-fin 5s
    timeout check 1s
    # No retries and no redispatch: a dial that hits a dead node before its
    # health check failed gets a quick 503 and the client redials, rather
    # than landing on a node its server-id does not hash to.
    retries 0

frontend relay
    bind %s
    acl healthz path /healthz
    acl has_server_id req.hdr(X-Pyrycode-Server) -m reg .
    http-request deny deny_status 400 if !healthz !has_server_id
    default_backend relays

backend relays
    balance hdr(X-Pyrycode-Server)
    hash-type consistent
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host relay
    http-check expect status 200
    # Test only: tell the client which node answered.
    http-response set-header ` + nodeHeader + ` %%[srv_name]
    default-server send-proxy-v2 check inter 200ms fall 1 rise 1
%s`

// soClient is a binary or a phone that redials whenever its connection
// ends, as the daemon and the apps do.
type soClient struct {
	path, serverID string
	fe             string
	binary         bool

	mu   sync.Mutex
	conn *websocket.Conn
	node string
	gen  int // connections made so far
	up   bool

	wmu      sync.Mutex   // binary: serialises echoes
	lifetime atomic.Int64 // binary: connections the relay ended with 1012
	msgs     chan []byte  // phone: what its binary echoed
	errs     chan error   // fatal: a binary got 4409
}

func (c *soClient) headers() http.Header {
	if c.binary {
		return http.Header{"X-Pyrycode-Server": {c.serverID}, "X-Pyrycode-Version": {"2"}, "User-Agent": {"scaleout-binary/1"}}
	}
	return http.Header{"X-Pyrycode-Server": {c.serverID}, "X-Pyrycode-Token": {"tok"}, "User-Agent": {"scaleout-phone/1"}}
}

func (c *soClient) state() (node string, gen int, up bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.node, c.gen, c.up
}

// run dials, serves the connection, and redials until stop is closed.
func (c *soClient) run(stop <-chan struct{}) {
	d := websocket.Dialer{HandshakeTimeout: 2 * time.Second}
	pause := func(d time.Duration) bool {
		select {
		case <-stop:
			return false
		case <-time.After(d):
			return true
		}
	}
	for {
		select {
		case <-stop:
			return
		default:
		}
		conn, resp, err := d.Dial("ws://"+c.fe+c.path, c.headers())
		if err != nil {
			// HAProxy's 503 while a dead node is not yet marked down, or a
			// refused connection: redial shortly.
			if !pause(50 * time.Millisecond) {
				return
			}
			continue
		}
		c.mu.Lock()
		c.conn, c.node, c.up = conn, resp.Header.Get(nodeHeader), true
		c.gen++
		c.mu.Unlock()
		stopped := make(chan struct{})
		go func() { // unblock the read when the test ends
			select {
			case <-stop:
				_ = conn.Close()
			case <-stopped:
			}
		}()
		err = c.serve(conn)
		close(stopped)
		c.mu.Lock()
		c.up = false
		c.mu.Unlock()
		_ = conn.Close()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			switch {
			case c.binary && ce.Code == 1012:
				c.lifetime.Add(1)
			case c.binary && ce.Code == 4409:
				c.errs <- fmt.Errorf("binary %s got 4409 %q: the daemon would exit", c.serverID, ce.Text)
				return
			case ce.Code == 4404 && ce.Text == "no server with that id":
				// The phone arrived before its binary: try again shortly.
				if !pause(50 * time.Millisecond) {
					return
				}
			}
		}
		// Anything else (1012 lifetime, 4404 reclaim, 1000 grace end, a
		// dropped connection): redial at once.
	}
}

// serve reads until the connection ends. A binary echoes every phone frame
// back to the phone that sent it.
func (c *soClient) serve(conn *websocket.Conn) error {
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return err
		}
		if !c.binary {
			select {
			case c.msgs <- data:
			default:
			}
			continue
		}
		var env struct {
			ConnID string          `json:"conn_id"`
			Frame  json.RawMessage `json:"frame"`
		}
		if json.Unmarshal(data, &env) != nil || env.ConnID == "" || len(env.Frame) == 0 {
			continue // a close notice
		}
		out, _ := json.Marshal(struct {
			ConnID string          `json:"conn_id"`
			Frame  json.RawMessage `json:"frame"`
		}{env.ConnID, env.Frame})
		c.wmu.Lock()
		_ = conn.SetWriteDeadline(time.Now().Add(soRTTimeout))
		err = conn.WriteMessage(websocket.TextMessage, out)
		c.wmu.Unlock()
		if err != nil {
			return err
		}
	}
}

// roundTrip sends msg from the phone and waits for its binary's echo.
func (c *soClient) roundTrip(msg string) error {
	c.mu.Lock()
	conn, up := c.conn, c.up
	c.mu.Unlock()
	if !up {
		return errors.New("phone not connected")
	}
	for len(c.msgs) > 0 {
		<-c.msgs // stale echoes of an earlier attempt
	}
	_ = conn.SetWriteDeadline(time.Now().Add(soRTTimeout))
	if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		return err
	}
	timeout := time.After(soRTTimeout)
	for {
		select {
		case got := <-c.msgs:
			if string(got) == msg {
				return nil
			}
		case <-timeout:
			return fmt.Errorf("no echo of %s within %v", msg, soRTTimeout)
		}
	}
}

type soPair struct {
	id     string
	binary *soClient
	phones []*soClient
}

// check verifies the pair now: binary and phones connected on one node that
// want accepts, and a round trip from each phone through that binary. It
// returns the node.
func (p *soPair) check(want func(string) bool, seq int) (string, error) {
	node, gen, up := p.binary.state()
	if !up {
		return "", errors.New("binary not connected")
	}
	if !want(node) {
		return "", fmt.Errorf("binary on %s", node)
	}
	for i, ph := range p.phones {
		pn, _, pup := ph.state()
		if !pup {
			return "", fmt.Errorf("phone %d not connected", i)
		}
		if pn != node {
			return "", fmt.Errorf("phone %d on %s, binary on %s", i, pn, node)
		}
	}
	for i, ph := range p.phones {
		if err := ph.roundTrip(fmt.Sprintf(`{"pair":%q,"phone":%d,"seq":%d}`, p.id, i, seq)); err != nil {
			return "", fmt.Errorf("phone %d: %v", i, err)
		}
	}
	// The echoes came through the connection checked above, not a new one.
	if n2, gen2, up2 := p.binary.state(); n2 != node || gen2 != gen || !up2 {
		return "", errors.New("binary redialled during the check")
	}
	return node, nil
}

// scaleOut is the running system.
type scaleOut struct {
	t       *testing.T
	nodes   []*soNode
	haproxy *relaytest.Process
	pairs   []*soPair
	errs    chan error
	seq     atomic.Int64
}

func (s *scaleOut) node(name string) *soNode {
	for _, n := range s.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// converge checks every pair, in parallel, until each has passed once
// within soPhaseWait; it returns the node each passed on.
func (s *scaleOut) converge(phase string, want func(p *soPair, node string) bool) map[string]string {
	s.t.Helper()
	start := time.Now()
	deadline := start.Add(soPhaseWait)
	type result struct {
		id, node string
		err      error
	}
	results := make(chan result, len(s.pairs))
	for _, p := range s.pairs {
		go func() {
			var last error
			for time.Now().Before(deadline) {
				select {
				case err := <-s.errs:
					results <- result{id: p.id, err: err}
					return
				default:
				}
				node, err := p.check(func(n string) bool { return want(p, n) }, int(s.seq.Add(1)))
				if err == nil {
					results <- result{id: p.id, node: node}
					return
				}
				last = err
				time.Sleep(20 * time.Millisecond) // poll
			}
			results <- result{id: p.id, err: fmt.Errorf("not converged after %v: %v", soPhaseWait, last)}
		}()
	}
	nodes := map[string]string{}
	var failed []string
	for range s.pairs {
		r := <-results
		if r.err != nil {
			failed = append(failed, r.id+": "+r.err.Error())
			continue
		}
		nodes[r.id] = r.node
	}
	if len(failed) > 0 {
		s.t.Fatalf("%s: %d of %d pairs failed:\n%s\n%s", phase, len(failed), len(s.pairs),
			strings.Join(failed, "\n"), s.diagnostics())
	}
	s.t.Logf("%s: all %d pairs routed within %v", phase, len(s.pairs), time.Since(start).Round(time.Millisecond))
	return nodes
}

// healthMatches polls each node's /healthz until it holds the binaries
// want says and two phones for each (a snapshot between lifetime redials).
func (s *scaleOut) healthMatches(phase string, want map[string]int, alive []*soNode) {
	s.t.Helper()
	deadline := time.Now().Add(soPhaseWait)
	for _, n := range alive {
		var h health
		var err error
		for {
			h, err = nodeHealth(n.addr)
			if err == nil && h.Binaries == want[n.name] && h.Phones == soPhones*want[n.name] {
				break
			}
			if time.Now().After(deadline) {
				s.t.Fatalf("%s: node %s healthz %+v (%v), want %d binaries and %d phones\n%s", phase, n.name, h, err,
					want[n.name], soPhones*want[n.name], s.diagnostics())
			}
			time.Sleep(10 * time.Millisecond) // poll
		}
	}
}

func (s *scaleOut) diagnostics() string {
	var b strings.Builder
	for _, n := range s.nodes {
		h, err := nodeHealth(n.addr)
		fmt.Fprintf(&b, "node %s (%s): %+v %v\n", n.name, n.addr, h, err)
		fmt.Fprintf(&b, "%s\n", n.proc.Logs.Tail())
	}
	fmt.Fprintf(&b, "haproxy:\n%s\n", s.haproxy.Logs.Tail())
	return b.String()
}

func tally(nodes map[string]string) map[string]int {
	m := map[string]int{}
	for _, n := range nodes {
		m[n]++
	}
	return m
}

func TestScaleOutBehindHAProxy(t *testing.T) {
	hap := haproxycfg.Path()
	if hap == "" {
		t.Skip("haproxy not on PATH: install it (apt-get install haproxy) to run the scale-out test")
	}
	dir := t.TempDir()
	relaytest.Build(t, "switchboard/cmd/switchboard") // now: the time limit excludes the build
	began := time.Now()

	s := &scaleOut{t: t, errs: make(chan error, soPairs)}
	var servers strings.Builder
	for i := range soNodes {
		n := &soNode{name: fmt.Sprintf("n%d", i), addr: relaytest.FreeAddr(t)}
		s.nodes = append(s.nodes, n)
		fmt.Fprintf(&servers, "    server %s %s id %d\n", n.name, n.addr, i+1)
	}
	for _, n := range s.nodes {
		startNode(t, n)
	}

	// HAProxy in the foreground; ready once /healthz answers through it.
	fe := relaytest.FreeAddr(t)
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, soHAProxyConfig, fe, servers.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	s.haproxy = relaytest.Exec(t, relaytest.Command{Path: hap, Args: []string{"-f", cfgPath, "-db"}})
	waitHAProxy(t, s.haproxy, fe)

	// Requests without the server-id header are denied (except /healthz).
	if resp, err := http.Get("http://" + fe + "/v1/client"); err != nil || resp.StatusCode != 400 {
		t.Fatalf("request without X-Pyrycode-Server: %v %v, want 400 from HAProxy", resp, err)
	} else {
		resp.Body.Close()
	}

	// (a) 20 binaries with two phones each.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
	})
	for i := range soPairs {
		id := fmt.Sprintf("scaleout-%02d", i)
		p := &soPair{id: id, binary: &soClient{path: "/v1/server", serverID: id, fe: fe, binary: true, errs: s.errs}}
		for range soPhones {
			p.phones = append(p.phones, &soClient{path: "/v1/client", serverID: id, fe: fe, msgs: make(chan []byte, 16), errs: s.errs})
		}
		s.pairs = append(s.pairs, p)
		for _, c := range append([]*soClient{p.binary}, p.phones...) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.run(stop)
			}()
		}
	}
	home := s.converge("(a) all nodes up", func(*soPair, string) bool { return true })
	homes := tally(home)
	if len(homes) < 2 {
		t.Fatalf("(a) every binary on one node: %v", homes)
	}
	s.healthMatches("(a) healthz", homes, s.nodes)
	t.Logf("(a) binaries per node: %v", homes)

	// (b) Kill the node holding the most binaries.
	victim := s.nodes[0]
	for _, n := range s.nodes {
		if homes[n.name] > homes[victim.name] {
			victim = n
		}
	}
	victim.proc.Kill()
	t.Logf("(b) killed %s (%d binaries)", victim.name, homes[victim.name])
	moved := s.converge("(b) "+victim.name+" down", func(_ *soPair, n string) bool { return n != victim.name })
	var alive []*soNode
	for _, n := range s.nodes {
		if n != victim {
			alive = append(alive, n)
		}
	}
	s.healthMatches("(b) healthz", tally(moved), alive)
	for id, n := range moved {
		if home[id] != victim.name && n != home[id] {
			t.Errorf("(b) %s moved from %s to %s although its node stayed up", id, home[id], n)
		}
	}

	// (c) Restart it on the same port: within lifetime + grace + slack every
	// moved binary is back on its home node, its phones with it.
	restarted := time.Now()
	startNode(t, victim)
	back := s.converge("(c) "+victim.name+" back", func(p *soPair, n string) bool { return n == home[p.id] })
	took := time.Since(restarted)
	s.healthMatches("(c) healthz", homes, s.nodes)
	if limit := soLifetime*11/10 + soGrace + 10*time.Second; took > limit {
		t.Fatalf("(c) pairs home %v after the restart, want within %v", took, limit)
	}
	var lifetimes int64
	for _, p := range s.pairs {
		lifetimes += p.binary.lifetime.Load()
	}
	t.Logf("(c) every pair home %v after %s restarted; per node %v; %d binary lifetimes ended (1012) in the whole run",
		took.Round(time.Millisecond), victim.name, tally(back), lifetimes)
	if total := time.Since(began); total > soTestLimit {
		t.Fatalf("scale-out test took %v, want under %v", total, soTestLimit)
	}
	select {
	case err := <-s.errs:
		t.Fatal(err)
	default:
	}
}

// waitHAProxy polls /healthz through HAProxy until a node answers.
func waitHAProxy(t *testing.T, p *relaytest.Process, fe string) {
	t.Helper()
	deadline := time.Now().Add(soStartWait)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get("http://" + fe + "/healthz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-p.Exited():
			t.Fatalf("haproxy exited:\n%s", p.Logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy not serving /healthz after %v (%v):\n%s", soStartWait, err, p.Logs.String())
		}
		time.Sleep(20 * time.Millisecond) // a process must start
	}
}
