package loop

import (
	"strconv"
	"time"
)

// respondHealth answers /healthz, whatever the method, with the exact shape
// the reference relay gives, keys in that order; HEAD gets the same headers
// and no body.
func (c *conn) respondHealth(headOnly bool) {
	s := c.srv
	body := make([]byte, 0, 160)
	body = append(body, `{"status":"ok","version":`...)
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
	c.respond(200, "Cache-Control: no-store\r\n", "application/json; charset=utf-8", body)
}
