package loop

import "switchboard/wsframe"

// Required headers per endpoint (docs/protocol.md, "Request headers"),
// checked in order.
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
	c.noteHeadStart()
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
		// A live upgrade's freeze waits for upgrades under way to be
		// registered or refused, so its registry snapshot misses none.
		c.srv.admitting.Add(1)
		c.upgrade(&req)
		c.srv.admitting.Add(-1)
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
	if c.srv.draining.Load() || c.srv.frozen.Load() {
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
	c.out.pushHeld(b, c.takeUpgradeStamp()) // written once register has decided: see handshake
	c.srv.counters.UpgradesAccepted.Add(1)
}
