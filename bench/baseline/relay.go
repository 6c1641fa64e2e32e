// Package baseline is the relay that Switchboard's benchmarks compare against.
//
// It follows the design of the original pyrycode relay: net/http in front,
// github.com/coder/websocket for the WebSocket layer, and goroutines per
// connection:
//
//   - phone:  the HTTP handler goroutine reads; a writer goroutine drains a
//     bounded channel of outbound frames; a heartbeat goroutine pings.
//   - binary: the HTTP handler goroutine reads; a heartbeat goroutine pings.
//     Several phones' read goroutines write to the same binary, so writes to
//     a binary are serialised with a mutex.
//
// One registry (server-id -> binary, each binary owning up to 16 phones) is
// guarded by a single sync.RWMutex. Envelopes are built and parsed with
// encoding/json.
//
// It speaks the wire contract in docs/protocol.md, minus the parts the
// benchmarks do not exercise: no grace window (a binary's slot and its phones
// go away with it), no takeover probe (a duplicate claim is always 4409), no
// rate limits, no connection cap, no push wake, no metrics.
package baseline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Config tunes the relay. Zero fields take the reference defaults.
type Config struct {
	Version         string        // reported by /healthz; default "baseline"
	PingInterval    time.Duration // heartbeat period; default 30s
	PongTimeout     time.Duration // how long a pong may take; default 30s
	WriteTimeout    time.Duration // per outbound message; default 10s
	MaxMessageBytes int64         // inbound message limit; default 262144
	PhonesPerServer int           // phones per server-id; default 16
	PhoneQueue      int           // outbound frames queued per phone; default 256
	Logger          *slog.Logger  // default: discard

	// ClaimBeforeUpgrade decides a binary's claim before its 101, as
	// Switchboard does. Off (the reference's order), the claim is made
	// after the 101, so a phone dialled right after a binary's upgrade can
	// get a spurious 4404 and has to retry.
	ClaimBeforeUpgrade bool
}

func (c Config) withDefaults() Config {
	if c.Version == "" {
		c.Version = "baseline"
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 30 * time.Second
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = 30 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 262144
	}
	if c.PhonesPerServer <= 0 {
		c.PhonesPerServer = 16
	}
	if c.PhoneQueue <= 0 {
		c.PhoneQueue = 256
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

var errNoBinaryConn = errors.New("binary connection not established")

// Close codes and reasons from docs/protocol.md, "Close codes".
const (
	codeNoServer    websocket.StatusCode = 4404
	codeClaimed     websocket.StatusCode = 4409
	codeTooMany     websocket.StatusCode = 4429
	reasonNoServer                       = "no server with that id"
	reasonClaimed                        = "server-id already claimed"
	reasonTooMany                        = "too many phones for server-id"
	reasonHeartbeat                      = "heartbeat timeout"
	reasonBacklog                        = "phone backlog full"
	reasonWriteFail                      = "phone write failed"
	reasonShutdown                       = "shutting down"
)

// Relay is an http.Handler serving /v1/server, /v1/client and /healthz.
type Relay struct {
	cfg   Config
	log   *slog.Logger
	start time.Time

	mu       sync.RWMutex       // guards everything below and every binary.phones
	binaries map[string]*binary // server-id -> the binary holding it
	nPhones  int                // registered phones, all binaries
	closing  bool               // Shutdown has begun
	wg       sync.WaitGroup     // one per running upgrade handler

	dropped atomic.Int64 // bad or unroutable binary envelopes

	// testHookClaim, when set, runs after each claim is decided.
	testHookClaim func(serverID string, ok bool)
	// testHookPhoneGone, when set, runs after a phone's teardown (including
	// its close notice, if any) is complete.
	testHookPhoneGone func(connID string)
}

type binary struct {
	serverID string
	conn     *websocket.Conn   // nil until the upgrade; written under both mu and wmu
	wmu      sync.Mutex        // serialises writes: many phone goroutines write here
	phones   map[string]*phone // conn_id -> phone; guarded by Relay.mu
}

type phone struct {
	id   string
	bin  *binary
	conn *websocket.Conn
	out  chan outbound // bounded queue drained by the writer goroutine
	done chan struct{} // closed when the phone's read loop has ended

	// byBinary: the binary asked for this phone's close, so no close notice.
	// Only the binary's read goroutine sets it.
	byBinary atomic.Bool
	// byRelay: the relay is closing this phone (backlog, write failure,
	// heartbeat, binary gone); the notice, if any, carries 1001.
	byRelay atomic.Bool
}

// outbound is one item of a phone's queue: a frame, a close directive, or a
// frame followed by a close.
type outbound struct {
	frame     []byte
	closeCode int
}

// New returns a relay ready to serve.
func New(cfg Config) *Relay {
	cfg = cfg.withDefaults()
	return &Relay{
		cfg:      cfg,
		log:      cfg.Logger,
		start:    time.Now(),
		binaries: make(map[string]*binary),
	}
}

// ServeHTTP routes the three endpoints; anything else is 404.
func (r *Relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch req.URL.Path {
	case "/v1/server":
		r.serveBinary(w, req)
	case "/v1/client":
		r.servePhone(w, req)
	case "/healthz":
		r.serveHealth(w)
	default:
		http.NotFound(w, req)
	}
}

// Dropped reports how many binary envelopes were dropped as bad or unroutable.
func (r *Relay) Dropped() int64 { return r.dropped.Load() }

// Shutdown closes every binary and phone with 1001 "shutting down", refuses
// new upgrades with 503, and waits for the connection handlers to finish or
// ctx to end. Listeners are the caller's (http.Server.Shutdown).
func (r *Relay) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.closing = true
	var conns []*websocket.Conn
	for _, b := range r.binaries {
		if b.conn != nil {
			conns = append(conns, b.conn)
		}
		for _, p := range b.phones {
			p.byRelay.Store(true)
			conns = append(conns, p.conn)
		}
	}
	r.mu.Unlock()
	for _, c := range conns {
		go c.Close(websocket.StatusGoingAway, reasonShutdown)
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// enter registers an upgrade handler with the shutdown WaitGroup; false once
// Shutdown has begun. Add happens under mu so it never races Wait.
func (r *Relay) enter() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.wg.Add(1)
	return true
}

// header returns the first value of a request header, trimmed.
func header(req *http.Request, name string) string {
	return strings.TrimSpace(req.Header.Get(name))
}

func (r *Relay) accept(w http.ResponseWriter, req *http.Request) (*websocket.Conn, error) {
	conn, err := websocket.Accept(w, req, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // Origin is not checked
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, err // Accept has already answered (e.g. 426)
	}
	conn.SetReadLimit(r.cfg.MaxMessageBytes) // over the limit: 1009 "read limited at N+1 bytes"
	return conn, nil
}

// ---------------------------------------------------------------- binary side

func (r *Relay) serveBinary(w http.ResponseWriter, req *http.Request) {
	serverID := header(req, "X-Pyrycode-Server")
	if serverID == "" || header(req, "X-Pyrycode-Version") == "" || header(req, "User-Agent") == "" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if !r.enter() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	defer r.wg.Done()

	b := &binary{serverID: serverID, phones: make(map[string]*phone)}
	early := r.cfg.ClaimBeforeUpgrade
	var refuse websocket.StatusCode // why the claim failed, 0 if it held
	var reason string
	if early {
		// Switchboard's order: the claim is decided before the 101. Phones
		// may register before b.conn exists; their writes wait on wmu.
		b.wmu.Lock()
		refuse, reason = r.claim(b)
	}
	conn, err := r.accept(w, req)
	if err == nil {
		r.mu.Lock() // Shutdown reads b.conn under mu
		b.conn = conn
		if r.closing && refuse == 0 {
			refuse, reason = websocket.StatusGoingAway, reasonShutdown // Shutdown missed it
		}
		r.mu.Unlock()
	}
	if early {
		b.wmu.Unlock()
	}
	if err != nil {
		if early && refuse == 0 {
			r.release(b)
		}
		return
	}
	if !early && refuse == 0 {
		refuse, reason = r.claim(b) // the reference's order: claim after the 101
	}
	if refuse != 0 {
		if early {
			r.release(b) // no-op unless Shutdown began after an early claim
		}
		conn.Close(refuse, reason)
		return
	}
	r.log.Debug("binary connected", "server_id", serverID)

	done := make(chan struct{})
	var hb sync.WaitGroup
	hb.Go(func() { r.heartbeat(conn, done, nil) })

	for {
		_, data, err := conn.Read(context.Background())
		if err != nil {
			break
		}
		r.route(b, data)
	}
	close(done)
	r.release(b)
	conn.CloseNow()
	hb.Wait()
	r.log.Debug("binary disconnected", "server_id", serverID)
}

// claim records b as the holder of its server-id unless one is already
// there (4409) or the relay is shutting down. First claim wins; there is no
// takeover probe.
func (r *Relay) claim(b *binary) (websocket.StatusCode, string) {
	r.mu.Lock()
	code, reason := websocket.StatusCode(0), ""
	if r.closing {
		code, reason = websocket.StatusGoingAway, reasonShutdown
	} else if _, taken := r.binaries[b.serverID]; taken {
		code, reason = codeClaimed, reasonClaimed
	} else {
		r.binaries[b.serverID] = b
	}
	hook := r.testHookClaim
	r.mu.Unlock()
	if hook != nil {
		hook(b.serverID, code == 0)
	}
	return code, reason
}

// release drops b's claim. There is no grace window: the slot and its phones
// go with the binary, the phones closed with 1000 and no close notices.
func (r *Relay) release(b *binary) {
	r.mu.Lock()
	if r.binaries[b.serverID] == b {
		delete(r.binaries, b.serverID)
	}
	orphans := make([]*phone, 0, len(b.phones))
	for id, p := range b.phones {
		delete(b.phones, id)
		r.nPhones--
		orphans = append(orphans, p)
	}
	r.mu.Unlock()
	for _, p := range orphans {
		p.byRelay.Store(true)
		go p.conn.Close(websocket.StatusNormalClosure, "")
	}
}

// binaryEnvelope is what a binary sends. Unknown fields are ignored.
type binaryEnvelope struct {
	ConnID    string          `json:"conn_id"`
	Frame     json.RawMessage `json:"frame"`
	CloseCode int             `json:"close_code"`
	PushWake  json.RawMessage `json:"push_wake"`
}

// route delivers one binary message to the phone it names. It never blocks:
// a phone whose queue is full is closed instead (a slow phone must not stall
// its binary).
func (r *Relay) route(b *binary, data []byte) {
	var env binaryEnvelope
	if err := json.Unmarshal(data, &env); err != nil {
		r.dropped.Add(1) // not an object, or wrong field types
		return
	}
	hasFrame := len(env.Frame) > 0 && string(env.Frame) != "null"
	switch {
	case env.CloseCode < 0 || env.CloseCode > 65535,
		env.ConnID == "", // push wake (or nothing at all): not supported here
		!hasFrame && env.CloseCode == 0:
		r.dropped.Add(1)
		return
	}

	r.mu.RLock()
	p := b.phones[env.ConnID] // only this binary's phones are reachable
	r.mu.RUnlock()
	if p == nil || p.byBinary.Load() || p.byRelay.Load() {
		r.dropped.Add(1) // unknown, gone, or already closing
		return
	}

	item := outbound{closeCode: env.CloseCode}
	if hasFrame {
		item.frame = env.Frame // the raw bytes as the binary wrote them
	}
	if item.closeCode != 0 {
		p.byBinary.Store(true)
	}
	select {
	case p.out <- item:
	default:
		p.byRelay.Store(true)
		go p.conn.Close(websocket.StatusInternalError, reasonBacklog)
	}
}

// send writes one text message to the binary. Phones' read goroutines call it
// concurrently, hence the mutex.
func (b *binary) send(data []byte, timeout time.Duration) error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	if b.conn == nil {
		return errNoBinaryConn // its upgrade failed after an early claim
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return b.conn.Write(ctx, websocket.MessageText, data)
}

// ----------------------------------------------------------------- phone side

func (r *Relay) servePhone(w http.ResponseWriter, req *http.Request) {
	serverID := header(req, "X-Pyrycode-Server")
	// The token's presence is all that is checked; it is never read further.
	if serverID == "" || header(req, "X-Pyrycode-Token") == "" || header(req, "User-Agent") == "" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if !r.enter() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	defer r.wg.Done()

	conn, err := r.accept(w, req)
	if err != nil {
		return
	}
	p, code, reason := r.register(serverID, conn)
	if p == nil {
		conn.Close(code, reason)
		return
	}
	r.log.Debug("phone connected", "conn_id", p.id)

	var helpers sync.WaitGroup
	helpers.Go(func() { r.writer(p) })
	helpers.Go(func() {
		r.heartbeat(conn, p.done, func() { p.byRelay.Store(true) })
	})

	notice, closeNormal := r.readPhone(p)
	close(p.done)

	// Unregister, then tell the binary, unless the binary asked for this
	// close or no longer holds the server-id.
	b := p.bin
	r.mu.Lock()
	if b.phones[p.id] == p {
		delete(b.phones, p.id)
		r.nPhones--
	}
	tell := !r.closing && r.binaries[b.serverID] == b && !p.byBinary.Load()
	r.mu.Unlock()
	if tell {
		msg, _ := json.Marshal(closeNotice{ConnID: p.id, CloseCode: notice})
		if err := b.send(msg, r.cfg.WriteTimeout); err != nil {
			r.log.Debug("close notice failed", "conn_id", p.id, "err", err)
		}
	}

	if closeNormal {
		conn.Close(websocket.StatusNormalClosure, "")
	} else {
		conn.CloseNow()
	}
	helpers.Wait()
	r.log.Debug("phone disconnected", "conn_id", p.id, "code", notice)
	if r.testHookPhoneGone != nil {
		r.testHookPhoneGone(p.id)
	}
}

// register adds a phone to the binary holding serverID, or says why not.
func (r *Relay) register(serverID string, conn *websocket.Conn) (*phone, websocket.StatusCode, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return nil, websocket.StatusGoingAway, reasonShutdown
	}
	b := r.binaries[serverID]
	if b == nil {
		return nil, codeNoServer, reasonNoServer
	}
	if len(b.phones) >= r.cfg.PhonesPerServer {
		return nil, codeTooMany, reasonTooMany
	}
	var id string
	for {
		id = "client-" + serverID + "-" + randomHex4()
		if _, dup := b.phones[id]; !dup {
			break
		}
	}
	p := &phone{
		id:   id,
		bin:  b,
		conn: conn,
		out:  make(chan outbound, r.cfg.PhoneQueue),
		done: make(chan struct{}),
	}
	b.phones[id] = p
	r.nPhones++
	return p, 0, ""
}

func randomHex4() string {
	var b [4]byte
	rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// phoneEnvelope wraps a phone message for its binary. Marshalling the
// RawMessage re-encodes it (compacted, <>& escaped), as the reference does.
type phoneEnvelope struct {
	ConnID string          `json:"conn_id"`
	Frame  json.RawMessage `json:"frame"`
}

type closeNotice struct {
	ConnID    string `json:"conn_id"`
	CloseCode int    `json:"close_code"`
}

// readPhone forwards the phone's messages to its binary until the phone's
// connection ends. It returns the close-notice code and whether the relay
// should close the phone with 1000 (a message that was not JSON).
func (r *Relay) readPhone(p *phone) (notice int, closeNormal bool) {
	for {
		_, data, err := p.conn.Read(context.Background())
		if err != nil {
			code := websocket.CloseStatus(err)
			if p.byRelay.Load() || code == -1 || code == websocket.StatusNoStatusRcvd {
				return int(websocket.StatusGoingAway), false
			}
			return int(code), false
		}
		if !json.Valid(data) {
			return int(websocket.StatusGoingAway), true
		}
		env, err := json.Marshal(phoneEnvelope{ConnID: p.id, Frame: data})
		if err != nil {
			continue // unreachable: data is valid JSON
		}
		// Synchronous write: a slow binary back-pressures its phones' reads.
		// A failed write means the binary is going away; its read loop
		// tears the slot down.
		if err := p.bin.send(env, r.cfg.WriteTimeout); err != nil {
			r.log.Debug("forward to binary failed", "conn_id", p.id, "err", err)
		}
	}
}

// writer drains the phone's queue in order, so a close directive takes
// effect after the frames queued before it.
func (r *Relay) writer(p *phone) {
	for {
		select {
		case <-p.done:
			return
		case it := <-p.out:
			if it.frame != nil {
				ctx, cancel := context.WithTimeout(context.Background(), r.cfg.WriteTimeout)
				err := p.conn.Write(ctx, websocket.MessageText, it.frame)
				cancel()
				if err != nil {
					p.byRelay.Store(true)
					p.conn.Close(websocket.StatusInternalError, reasonWriteFail)
					return
				}
			}
			if it.closeCode != 0 {
				p.conn.Close(websocket.StatusCode(it.closeCode), "")
				return
			}
		}
	}
}

// heartbeat pings every PingInterval; a pong later than PongTimeout closes
// the connection with 1011 "heartbeat timeout". onTimeout, if set, runs first.
func (r *Relay) heartbeat(conn *websocket.Conn, done <-chan struct{}, onTimeout func()) {
	t := time.NewTicker(r.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.PongTimeout)
		err := conn.Ping(ctx)
		cancel()
		if err == nil {
			continue
		}
		if errors.Is(err, context.DeadlineExceeded) {
			if onTimeout != nil {
				onTimeout()
			}
			conn.Close(websocket.StatusInternalError, reasonHeartbeat)
		}
		return // timed out, or the connection is already gone
	}
}

// ---------------------------------------------------------------- healthz

type health struct {
	Status            string `json:"status"`
	Version           string `json:"version"`
	ConnectedBinaries int    `json:"connected_binaries"`
	ConnectedPhones   int    `json:"connected_phones"`
	UptimeSeconds     int64  `json:"uptime_seconds"`
}

func (r *Relay) serveHealth(w http.ResponseWriter) {
	r.mu.RLock()
	h := health{
		Status:            "ok",
		Version:           r.cfg.Version,
		ConnectedBinaries: len(r.binaries),
		ConnectedPhones:   r.nPhones,
		UptimeSeconds:     int64(time.Since(r.start) / time.Second),
	}
	r.mu.RUnlock()
	body, _ := json.Marshal(h)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(body)
}
