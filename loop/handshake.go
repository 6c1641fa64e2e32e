package loop

import (
	"errors"
	"strconv"

	"switchboard/registry"
	"switchboard/wsframe"
)

// Required headers per endpoint (the relay protocol, §2), checked in order.
var (
	binaryHeaders = []string{"X-Pyrycode-Server", "X-Pyrycode-Version", "User-Agent"}
	phoneHeaders  = []string{"X-Pyrycode-Server", "X-Pyrycode-Token", "User-Agent"}
)

// maxServerIDLen bounds a server-id; it ends up inside every conn_id.
const maxServerIDLen = 128

// handshake waits for a whole request head, then answers it: /healthz, a
// refusal, or a 101 followed by registration. It returns how many bytes it
// used; bytes after the head are WebSocket frames the client pipelined.
func (c *conn) handshake(data []byte) int {
	if c.srv.cfg.ProxyProtocol && !c.proxied {
		n := c.proxyHeader(data) // admission.go
		if n == 0 {
			return 0 // staged for more, or refused
		}
		return n + c.handshake(data[n:])
	}
	limit := c.srv.cfg.MaxRequestHeaderBytes
	end := wsframe.HeaderEnd(data)
	if end < 0 || end > limit {
		if end > limit || len(data) > limit {
			c.reject(RejectHeaderSize, 431, "request head too large\n")
		}
		return 0 // wait for more (staged) unless rejected
	}
	var req wsframe.Request
	if err := wsframe.ParseRequest(data[:end], &req); err != nil {
		c.reject(RejectMalformed, 400, "malformed request\n")
		return end
	}
	if c.route(&req) {
		c.upgrade(&req)
	}
	return end
}

// route answers /healthz and refusals by path and method; for the two
// upgrade endpoints it sets the role, applies the rate limit and reports
// true.
func (c *conn) route(req *wsframe.Request) bool {
	switch string(req.Path) { // compared only; the compiler does not copy
	case "/healthz":
		// Any method, as the reference relay answers it: health checkers
		// differ in the method they send. A request body is never read;
		// the connection discards its input until it closes.
		c.respondHealth(string(req.Method) == "HEAD")
		return false
	case "/v1/server":
		c.role = roleBinary
		c.out.limit = c.srv.cfg.BinaryOutboxBytes // a binary fans in many phones
		c.out.fanIn = true
	case "/v1/client":
		c.role = rolePhone
	default:
		c.reject(RejectNotFound, 404, "not found\n")
		return false
	}
	// The limit comes first on an upgrade path: every attempt spends a
	// token, whatever the gate below answers, so the gate cannot be probed
	// without limit (admission.go).
	if !c.admit(req) {
		return false // 429
	}
	if !isGet(req.Method) {
		c.reject(RejectMethod, 405, "")
		return false
	}
	return true
}

// upgrade runs an upgrade request that route let through (rate limit and
// method passed) through the rest of the gate (the order is spelled out in
// admission.go), then answers 101 and registers.
func (c *conn) upgrade(req *wsframe.Request) {
	required := binaryHeaders
	if c.role == rolePhone {
		required = phoneHeaders
	}
	for _, name := range required {
		if len(req.Header(name)) == 0 {
			c.reject(RejectHeaders, 400, "missing header "+name+"\n")
			return
		}
	}
	serverID := req.Header("X-Pyrycode-Server")
	if !validServerID(serverID) {
		c.reject(RejectServerID, 400, "invalid X-Pyrycode-Server\n")
		return
	}
	key := req.Header("Sec-WebSocket-Key")
	if !req.HasToken("Upgrade", "websocket") || !req.HasToken("Connection", "upgrade") ||
		string(req.Header("Sec-WebSocket-Version")) != "13" || !wsframe.ValidKey(key) {
		c.reject(RejectNotUpgrade, 426, "websocket upgrade required\n")
		return
	}
	if c.srv.draining.Load() {
		c.reject(RejectDraining, 503, "")
		return
	}
	if c.srv.budget.overHigh() {
		// The relay's buffers are past the budget's high mark (budget.go):
		// another connection would only add to them. 503 like the other
		// capacity refusals, so balancers and clients retry elsewhere.
		c.reject(RejectOverloaded, 503, "")
		return
	}
	if int(c.srv.live.Add(1)) > c.srv.cfg.MaxConnections {
		c.srv.live.Add(-1)
		c.reject(RejectCapacity, 503, "")
		return
	}
	c.upgraded = true
	c.serverID = string(serverID)
	c.headDue.Store(0)
	hook(hookAdmitted, c)
	c.accept(key)
	if !c.register(req.Header("X-Pyrycode-Device-Name")) {
		return // waiting on a takeover probe: see takeover.go
	}
	c.out.release() // only now may the 101 leave
	c.startHeartbeat()
	c.startLifetime() // binaries only
	if c.srv.draining.Load() {
		// Shutdown began after the draining check above and its registry
		// snapshot may have missed this connection (the shard lock orders
		// the two: a registration the snapshot did not see sees draining).
		// A second 1001 is a no-op, so it does not matter if it did not.
		c.close(causeShutdown)
	}
}

func isGet(method []byte) bool { return string(method) == "GET" }

// validServerID: 1..128 bytes of printable ASCII without '"' or '\', so it can
// be spliced into conn_ids and envelopes without escaping.
func validServerID(id []byte) bool {
	if len(id) == 0 || len(id) > maxServerIDLen {
		return false
	}
	for _, ch := range id {
		if ch < 0x21 || ch > 0x7e || ch == '"' || ch == '\\' {
			return false
		}
	}
	return true
}

// accept queues the 101. It goes through the outbox like every other write,
// so a refusal's close frame queued right after it cannot overtake it.
func (c *conn) accept(key []byte) {
	var accept [wsframe.AcceptKeySize]byte
	wsframe.PutAcceptKey(&accept, key)
	b := framePool.Get()
	b.B = append(b.B, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	b.B = append(b.B, accept[:]...)
	b.B = append(b.B, "\r\n\r\n"...)
	c.out.pushHeld(b) // written once register has decided: see handshake
	c.srv.counters.UpgradesAccepted.Add(1)
}

// register records the binary's claim or attaches the phone. The decision is
// made before the 101 leaves the outbox, so a phone dialled after a binary's
// upgrade completed always finds it. It returns false when the decision is
// pending: a rival binary holds the server-id and is being probed, and the
// probe's outcome releases this connection's 101 (see takeover.go).
func (c *conn) register(deviceName []byte) (decided bool) {
	s := c.srv
	if c.role == roleBinary {
		var scratch [16]*conn
		evicted, holder, first, err := s.reg.ClaimOrWait(c.serverID, c, scratch[:0])
		if err != nil {
			c.claimQueued = true
			s.startProbe(holder, c, first)
			if s.draining.Load() && s.reg.Withdraw(c.serverID, c) {
				// Queued after Shutdown emptied the queues: nobody else
				// will answer this claim (same ordering as in upgrade).
				c.claimShutdown()
			}
			return false
		}
		closeReclaimed(evicted)
		c.countUpgrade(UpgradeAccept)
		s.log.Info("binary connected", "server_id", c.serverID, "remote", c.src, "reclaimed_phones", len(evicted))
		return true
	}
	connID, b, err := s.reg.AddPhone(c.serverID, c)
	if err != nil {
		if errors.Is(err, registry.ErrNoServer) {
			s.counters.RegistryNoServer.Add(1)
			c.countUpgrade(UpgradeReject404)
		} else {
			s.counters.RegistryPhonesCap.Add(1)
			c.countUpgrade(UpgradeReject429)
		}
		c.refuse(err)
		return true
	}
	c.connID, c.binary = connID, b
	c.countUpgrade(UpgradeAccept)
	s.log.Debug("phone connected", "conn_id", connID, "device", string(deviceName), "remote", c.src)
	return true
}

// countUpgrade records what became of this connection's upgrade attempt.
func (c *conn) countUpgrade(o UpgradeOutcome) {
	endpoint := 0
	if c.role == rolePhone {
		endpoint = 1
	}
	c.srv.counters.Upgrades[endpoint][o].Add(1)
}

func rejectOutcome(why RejectReason) UpgradeOutcome {
	switch why {
	case RejectRateLimit:
		return UpgradeRejectRateLimit
	case RejectNotUpgrade:
		return UpgradeRejectNotUpgrade
	case RejectCapacity, RejectDraining, RejectOverloaded:
		return UpgradeRejectCapacity
	}
	return UpgradeRejectHeaders
}

// closeReclaimed ends the phones of a server-id that a new binary took.
func closeReclaimed(phones []*conn) {
	for _, p := range phones {
		p.close(causeReclaimed)
	}
}

// refuse closes an upgraded connection the registry turned away.
func (c *conn) refuse(err error) {
	// Input stays parsed (readDone is not set): the stream is in sync, data
	// frames are ignored because the connection is closing, and the peer's
	// answering close frame ends the connection at once instead of holding a
	// connection slot until CloseLinger.
	c.serverID = "" // holds nothing: the close callback must not release it
	switch {
	case errors.Is(err, registry.ErrClaimed):
		c.close(causeClaimed)
	case errors.Is(err, registry.ErrPhonesAtCap):
		c.close(causePhonesAtCap)
	default:
		c.close(causeNoServer)
	}
}

// reject answers a request that will not be upgraded and closes after it.
func (c *conn) reject(why RejectReason, status int, body string) {
	c.readDone = true
	c.srv.counters.Rejects[why].Add(1)
	if c.role != roleNone {
		c.countUpgrade(rejectOutcome(why))
	}
	c.srv.log.Debug("request refused", "reason", why.String(), "status", status, "remote", c.src, "source", c.source())
	extra := ""
	if status == 426 {
		extra = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
	}
	c.respond(status, extra, "text/plain; charset=utf-8", []byte(body))
}

// respond queues a complete HTTP/1.1 response as the connection's final write.
func (c *conn) respond(status int, extraHeaders, contentType string, body []byte) {
	b := framePool.Get()
	b.B = append(b.B, "HTTP/1.1 "...)
	b.B = strconv.AppendInt(b.B, int64(status), 10)
	b.B = append(b.B, ' ')
	b.B = append(b.B, statusText(status)...)
	b.B = append(b.B, "\r\nConnection: close\r\nContent-Length: "...)
	b.B = strconv.AppendInt(b.B, int64(len(body)), 10)
	b.B = append(b.B, "\r\n"...)
	if len(body) > 0 {
		b.B = append(b.B, "Content-Type: "...)
		b.B = append(b.B, contentType...)
		b.B = append(b.B, "\r\n"...)
	}
	b.B = append(b.B, extraHeaders...)
	b.B = append(b.B, "\r\n"...)
	if !c.headOnly {
		b.B = append(b.B, body...)
	}
	// The head arrived and is answered: from here the close linger alone
	// bounds the connection (outbox.go, finish). Left armed, the handshake
	// deadline would tear down a client still reading our answer and count
	// a handshake_timeout for a request already counted as refused.
	c.headDue.Store(0)
	c.state.closing.Store(true)
	c.out.pushFinal(b, lingerClose, false)
}

func statusText(status int) string {
	switch status {
	case 200:
		return "OK"
	case 400:
		return "Bad Request"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 426:
		return "Upgrade Required"
	case 429:
		return "Too Many Requests"
	case 431:
		return "Request Header Fields Too Large"
	case 503:
		return "Service Unavailable"
	}
	return "Error"
}
