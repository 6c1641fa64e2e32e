package loop

import (
	"strconv"
	"time"
)

// respondHealth answers /healthz, whatever the method, with the exact shape
// the reference relay gives, keys in that order; HEAD gets the same headers
// and no body. While the relay drains the answer is 503 with
// "status":"draining" and the same keys, so a balancer's health check takes
// the node out instead of sending it upgrades it would refuse.
func (c *conn) respondHealth(headOnly bool) {
	s := c.srv
	status, code := `{"status":"ok","version":`, 200
	if s.draining.Load() {
		status, code = `{"status":"draining","version":`, 503
	}
	body := make([]byte, 0, 160)
	body = append(body, status...)
	body = append(body, s.versionJSON...)
	body = append(body, `,"connected_binaries":`...)
	body = strconv.AppendInt(body, int64(s.reg.Binaries()), 10)
	body = append(body, `,"connected_phones":`...)
	body = strconv.AppendInt(body, int64(s.reg.Phones()), 10)
	body = append(body, `,"uptime_seconds":`...)
	body = strconv.AppendInt(body, int64(time.Since(s.started)/time.Second), 10)
	body = append(body, '}')
	c.readDone = true
	c.headOnly = headOnly
	c.respond(code, "Cache-Control: no-store\r\n", "application/json; charset=utf-8", body)
}
