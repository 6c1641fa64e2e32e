package baseline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

const ioTimeout = 5 * time.Second

type harness struct {
	t      *testing.T
	relay  *Relay
	srv    *httptest.Server
	gone   chan string // conn_ids whose teardown finished
	claims chan bool   // one per binary claim decided
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	r := New(cfg)
	h := &harness{t: t, relay: r, gone: make(chan string, 64), claims: make(chan bool, 64)}
	r.testHookPhoneGone = func(id string) { h.gone <- id }
	r.testHookClaim = func(_ string, ok bool) { h.claims <- ok }
	h.srv = httptest.NewServer(r)
	t.Cleanup(h.srv.Close)
	return h
}

func (h *harness) url(path string) string {
	return "ws" + strings.TrimPrefix(h.srv.URL, "http") + path
}

func (h *harness) dial(path string, hdr http.Header) *websocket.Conn {
	h.t.Helper()
	d := websocket.Dialer{HandshakeTimeout: ioTimeout}
	c, resp, err := d.Dial(h.url(path), hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		h.t.Fatalf("dial %s: %v (status %d)", path, err, status)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

func binaryHeaders(id string) http.Header {
	return http.Header{
		"X-Pyrycode-Server":  {id},
		"X-Pyrycode-Version": {"2"},
		"User-Agent":         {"pyry-test"},
	}
}

func phoneHeaders(id string) http.Header {
	return http.Header{
		"X-Pyrycode-Server": {id},
		"X-Pyrycode-Token":  {"secret"},
		"User-Agent":        {"phone-test"},
	}
}

// binary dials a binary and waits until its claim has been decided: by
// default the relay claims after the 101, like the reference, so a phone
// dialled straight after could otherwise get 4404.
func (h *harness) binary(id string) *websocket.Conn {
	h.t.Helper()
	c := h.dial("/v1/server", binaryHeaders(id))
	select {
	case <-h.claims:
	case <-time.After(ioTimeout):
		h.t.Fatal("claim not decided")
	}
	return c
}

func (h *harness) phone(id string) *websocket.Conn {
	return h.dial("/v1/client", phoneHeaders(id))
}

// read returns the next data message, failing the test on error.
func read(t *testing.T, c *websocket.Conn) (int, []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	typ, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, data
}

func write(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// expectClose reads until the connection ends and checks the close frame.
func expectClose(t *testing.T, c *websocket.Conn, code int, reason string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	for {
		_, data, err := c.ReadMessage()
		if err == nil {
			t.Fatalf("want close %d, got message %q", code, data)
		}
		ce, ok := err.(*websocket.CloseError)
		if !ok {
			t.Fatalf("want close %d %q, got %v", code, reason, err)
		}
		if ce.Code != code || ce.Text != reason {
			t.Fatalf("close = %d %q, want %d %q", ce.Code, ce.Text, code, reason)
		}
		return
	}
}

var connIDRE = regexp.MustCompile(`^client-(srv|other)-[0-9a-f]{8}$`)

// envelope parses a phone->binary envelope, checking its exact shape.
func envelope(t *testing.T, data []byte) (connID string, frame json.RawMessage) {
	t.Helper()
	if !strings.HasPrefix(string(data), `{"conn_id":"`) {
		t.Fatalf("envelope does not start with conn_id: %s", data)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("envelope is not an object: %s", data)
	}
	if len(m) != 2 || m["conn_id"] == nil || m["frame"] == nil {
		t.Fatalf("envelope keys: %s", data)
	}
	if err := json.Unmarshal(m["conn_id"], &connID); err != nil {
		t.Fatal(err)
	}
	if !connIDRE.MatchString(connID) {
		t.Fatalf("conn_id %q", connID)
	}
	return connID, m["frame"]
}

func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

// hello has the phone say something and returns the conn_id the binary saw.
func hello(t *testing.T, bin, ph *websocket.Conn) string {
	t.Helper()
	write(t, ph, `{"hello":1}`)
	_, data := read(t, bin)
	id, _ := envelope(t, data)
	return id
}

func TestPhoneToBinaryEnvelope(t *testing.T) {
	h := newHarness(t, Config{})
	bin := h.binary("srv")
	ph := h.phone("srv")

	sent := `{ "type" : "hello", "n": [1, 2.5, null], "s": "a<b>&c ☃" }`
	write(t, ph, sent)
	typ, data := read(t, bin)
	if typ != websocket.TextMessage {
		t.Fatalf("type %d, want text", typ)
	}
	id, frame := envelope(t, data)
	if !sameJSON(t, frame, []byte(sent)) {
		t.Fatalf("frame %s, sent %s", frame, sent)
	}

	// A binary message is accepted too; same conn_id, still a text envelope.
	ph.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := ph.WriteMessage(websocket.BinaryMessage, []byte(`[true]`)); err != nil {
		t.Fatal(err)
	}
	typ, data = read(t, bin)
	id2, frame := envelope(t, data)
	if typ != websocket.TextMessage || id2 != id || string(frame) != `[true]` {
		t.Fatalf("got %d %s", typ, data)
	}

	// An injection attempt stays inside the frame (it is not valid JSON, so
	// the phone is dropped: 1000 to it, 1001 to the binary).
	write(t, ph, `1,"conn_id":"client-srv-00000000"`)
	expectClose(t, ph, websocket.CloseNormalClosure, "")
	_, data = read(t, bin)
	if want := fmt.Sprintf(`{"conn_id":%q,"close_code":1001}`, id); string(data) != want {
		t.Fatalf("notice %s, want %s", data, want)
	}
}

func TestBinaryToPhoneByteForByte(t *testing.T) {
	h := newHarness(t, Config{})
	bin := h.binary("srv")
	ph := h.phone("srv")
	id := hello(t, bin, ph)

	frames := []string{
		`{ "a" : [1, 2 ,"x<y"],"u":"\u00e9" }`,
		`"just a string"`,
		`12345`,
	}
	for _, f := range frames {
		write(t, bin, fmt.Sprintf(`{"frame": %s , "conn_id":%q, "unknown":{"x":1}}`, f, id))
	}
	for _, f := range frames { // FIFO
		typ, data := read(t, ph)
		if typ != websocket.TextMessage || string(data) != f {
			t.Fatalf("phone got %d %q, want text %q", typ, data, f)
		}
	}
}

func TestBadBinaryEnvelopesDropped(t *testing.T) {
	h := newHarness(t, Config{})
	bin := h.binary("srv")
	ph := h.phone("srv")
	id := hello(t, bin, ph)
	other := h.binary("other")
	otherPh := h.phone("other")
	otherID := hello(t, other, otherPh)

	bad := []string{
		`[1]`, `null`, `"x"`, `{}`,
		fmt.Sprintf(`{"conn_id":%q}`, id),                              // no frame, no close
		fmt.Sprintf(`{"conn_id":%q,"frame":null}`, id),                 // null frame
		fmt.Sprintf(`{"conn_id":%q,"frame":1,"close_code":70000}`, id), // out of range
		fmt.Sprintf(`{"conn_id":%q,"frame":1,"close_code":"x"}`, id),
		`{"conn_id":7,"frame":1}`,
		`{"conn_id":"client-srv-ffffffff","frame":1}`,    // unknown phone
		fmt.Sprintf(`{"conn_id":%q,"frame":1}`, otherID), // another server's phone
		`{"push_wake":{"platform":"fcm","token":"t"}}`,   // not supported
		`not json`,
	}
	for _, m := range bad {
		write(t, bin, m)
	}
	write(t, bin, fmt.Sprintf(`{"conn_id":%q,"frame":"ok"}`, id))
	if _, data := read(t, ph); string(data) != `"ok"` {
		t.Fatalf("phone got %s", data)
	}
	if got := h.relay.Dropped(); got != int64(len(bad)) {
		t.Fatalf("dropped %d, want %d", got, len(bad))
	}
	// The other server's phone got nothing and the binary is still up.
	write(t, other, fmt.Sprintf(`{"conn_id":%q,"frame":"mine"}`, otherID))
	if _, data := read(t, otherPh); string(data) != `"mine"` {
		t.Fatalf("other phone got %s", data)
	}
}

func TestCloseDirective(t *testing.T) {
	h := newHarness(t, Config{})
	bin := h.binary("srv")
	ph := h.phone("srv")
	id := hello(t, bin, ph)

	write(t, bin, fmt.Sprintf(`{"conn_id":%q,"frame":{"bye":true}}`, id))
	write(t, bin, fmt.Sprintf(`{"conn_id":%q,"frame":"last","close_code":4421}`, id))
	for _, want := range []string{`{"bye":true}`, `"last"`} {
		if _, data := read(t, ph); string(data) != want {
			t.Fatalf("phone got %s, want %s", data, want)
		}
	}
	expectClose(t, ph, 4421, "")
	if got := <-h.gone; got != id {
		t.Fatalf("gone %s, want %s", got, id)
	}

	// No close notice: the next thing the binary sees is another phone.
	ph2 := h.phone("srv")
	write(t, ph2, `{"second":1}`)
	_, data := read(t, bin)
	id2, frame := envelope(t, data)
	if id2 == id || string(frame) != `{"second":1}` {
		t.Fatalf("binary got %s after a binary-requested close", data)
	}
}

func TestCloseNotice(t *testing.T) {
	h := newHarness(t, Config{})
	bin := h.binary("srv")

	// Close frame with a code: that code.
	ph := h.phone("srv")
	id := hello(t, bin, ph)
	write(t, ph, `{"after":"hello"}`)
	ph.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye"), time.Now().Add(ioTimeout))
	_, data := read(t, bin)
	if _, frame := envelope(t, data); string(frame) != `{"after":"hello"}` {
		t.Fatalf("binary got %s, want the frame before the notice", data)
	}
	_, data = read(t, bin)
	if want := fmt.Sprintf(`{"conn_id":%q,"close_code":4000}`, id); string(data) != want {
		t.Fatalf("notice %s, want %s", data, want)
	}

	// TCP drop: 1001.
	ph = h.phone("srv")
	id = hello(t, bin, ph)
	ph.UnderlyingConn().Close()
	_, data = read(t, bin)
	if want := fmt.Sprintf(`{"conn_id":%q,"close_code":1001}`, id); string(data) != want {
		t.Fatalf("notice %s, want %s", data, want)
	}
}

func TestOversizedMessage(t *testing.T) {
	h := newHarness(t, Config{})
	bin := h.binary("srv")
	ph := h.phone("srv")
	id := hello(t, bin, ph)

	exact := `"` + strings.Repeat("a", 262144-2) + `"`
	write(t, ph, exact)
	if _, data := read(t, bin); !strings.Contains(string(data), exact) {
		t.Fatal("a message of exactly 262144 bytes was not forwarded")
	}
	write(t, ph, exact+" ")
	expectClose(t, ph, websocket.CloseMessageTooBig, "read limited at 262145 bytes")
	_, data := read(t, bin)
	if want := fmt.Sprintf(`{"conn_id":%q,"close_code":1001}`, id); string(data) != want {
		t.Fatalf("notice %s, want %s", data, want)
	}
}

func TestNoServer4404(t *testing.T) {
	h := newHarness(t, Config{})
	ph := h.phone("nobody")
	expectClose(t, ph, 4404, "no server with that id")
}

func TestClaimBeforeUpgrade(t *testing.T) {
	h := newHarness(t, Config{ClaimBeforeUpgrade: true})
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("srv%d", i)
		// No waiting for the claim: it was decided before the 101.
		bin := h.dial("/v1/server", binaryHeaders(id))
		ph := h.phone(id)
		write(t, ph, `{"n":1}`)
		if _, data := read(t, bin); !strings.Contains(string(data), `"frame":{"n":1}`) {
			t.Fatalf("binary got %s", data)
		}
		if i == 0 {
			expectClose(t, h.dial("/v1/server", binaryHeaders(id)), 4409, "server-id already claimed")
		}
	}
}

func TestClaimed4409(t *testing.T) {
	h := newHarness(t, Config{})
	bin := h.binary("srv")
	dup := h.binary("srv")
	expectClose(t, dup, 4409, "server-id already claimed")
	// The incumbent still routes.
	ph := h.phone("srv")
	hello(t, bin, ph)
}

func TestTooManyPhones4429(t *testing.T) {
	h := newHarness(t, Config{})
	bin := h.binary("srv")
	seen := map[string]bool{}
	for i := 0; i < 16; i++ {
		seen[hello(t, bin, h.phone("srv"))] = true
	}
	if len(seen) != 16 {
		t.Fatalf("%d distinct conn_ids, want 16", len(seen))
	}
	expectClose(t, h.phone("srv"), 4429, "too many phones for server-id")
}

func TestBinaryGoneClosesPhones(t *testing.T) {
	h := newHarness(t, Config{})
	bin := h.binary("srv")
	ph := h.phone("srv")
	hello(t, bin, ph)
	bin.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(ioTimeout))
	expectClose(t, ph, websocket.CloseNormalClosure, "")
	<-h.gone
	// The slot is free again.
	bin2 := h.binary("srv")
	hello(t, bin2, h.phone("srv"))
}

func TestHeartbeatTimeout(t *testing.T) {
	h := newHarness(t, Config{PingInterval: 20 * time.Millisecond, PongTimeout: 50 * time.Millisecond})
	bin := h.binary("srv")
	// gorilla answers pings only while reading, so the binary reads all the
	// time; its messages come through a channel.
	msgs := make(chan []byte, 8)
	go func() {
		defer close(msgs)
		for {
			_, data, err := bin.ReadMessage()
			if err != nil {
				return
			}
			msgs <- data
		}
	}()
	next := func() []byte {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatal("binary connection ended")
			}
			return m
		case <-time.After(ioTimeout):
			t.Fatal("binary got nothing")
		}
		return nil
	}

	ph := h.phone("srv")
	write(t, ph, `{"hello":1}`)
	id, _ := envelope(t, next())
	ph.SetPingHandler(func(string) error { return nil }) // never pong
	expectClose(t, ph, websocket.CloseInternalServerErr, "heartbeat timeout")
	if want := fmt.Sprintf(`{"conn_id":%q,"close_code":1001}`, id); string(next()) != want {
		t.Fatalf("notice, want %s", want)
	}
}

func TestHeadersAndHealth(t *testing.T) {
	h := newHarness(t, Config{Version: "v-test"})
	cases := []struct {
		path string
		hdr  http.Header
		drop string
	}{
		{"/v1/server", binaryHeaders("srv"), "X-Pyrycode-Server"},
		{"/v1/server", binaryHeaders("srv"), "X-Pyrycode-Version"},
		{"/v1/server", binaryHeaders("srv"), "User-Agent"},
		{"/v1/client", phoneHeaders("srv"), "X-Pyrycode-Server"},
		{"/v1/client", phoneHeaders("srv"), "X-Pyrycode-Token"},
		{"/v1/client", phoneHeaders("srv"), "User-Agent"},
	}
	for _, c := range cases {
		if c.drop == "User-Agent" {
			c.hdr.Set(c.drop, " ") // blank; absent would get Go's default
		} else {
			c.hdr.Del(c.drop)
		}
		d := websocket.Dialer{HandshakeTimeout: ioTimeout}
		conn, resp, err := d.Dial(h.url(c.path), c.hdr)
		if err == nil {
			conn.Close()
			t.Fatalf("%s without %s: upgraded", c.path, c.drop)
		}
		if resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s without %s: %v %v", c.path, c.drop, resp, err)
		}
	}

	bin := h.binary("srv")
	hello(t, bin, h.phone("srv"))

	resp, err := http.Get(h.srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 ||
		resp.Header.Get("Content-Type") != "application/json; charset=utf-8" ||
		resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("healthz %d %v", resp.StatusCode, resp.Header)
	}
	re := regexp.MustCompile(`^\{"status":"ok","version":"v-test","connected_binaries":1,"connected_phones":1,"uptime_seconds":\d+\}$`)
	if !re.Match(body) {
		t.Fatalf("healthz body %s", body)
	}

	resp, err = http.Get(h.srv.URL + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/nope: %d", resp.StatusCode)
	}
}

func TestShutdown(t *testing.T) {
	h := newHarness(t, Config{})
	bin := h.binary("srv")
	ph := h.phone("srv")
	hello(t, bin, ph)
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		errc <- h.relay.Shutdown(ctx)
	}()
	expectClose(t, bin, websocket.CloseGoingAway, "shutting down")
	expectClose(t, ph, websocket.CloseGoingAway, "shutting down")
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
