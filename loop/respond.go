package loop

import "strconv"

// reject answers a request that will not be upgraded and closes after it.
func (c *conn) reject(why RejectReason, status int, body string) {
	c.readDone = true
	c.srv.counters.Rejects[why].Add(1)
	if c.role != roleNone {
		c.countUpgrade(rejectOutcome(why))
	}
	c.srv.log.Debug("request refused", "reason", why.String(), "status", status, c.addrs(), "source", c.source())
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
	c.out.pushFinalStamped(b, lingerClose, false, c.takeUpgradeStamp())
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
