package loop_test

// The HTTP surface (docs/protocol.md, "Endpoints" and "Upgrade answers")
// and the registry's post-upgrade outcomes ("Close codes"), driven over
// loopback.

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"switchboard/internal/wsclient"
	"switchboard/loop"
)

// exchange sends one raw request head and returns the response and body.
func exchange(t *testing.T, addr, head string) (*http.Response, []byte) {
	t.Helper()
	rc := rawDial(t, addr)
	rc.write([]byte(head))
	resp, body := rc.response()
	return resp, body
}

// expectRegistered fails unless the relay holds exactly binaries binaries,
// phones phones and live upgraded connections.
func expectRegistered(t *testing.T, r *relay, binaries, phones, live int) {
	t.Helper()
	if b, p, l := r.Binaries(), r.Phones(), r.Live(); b != binaries || p != phones || l != live {
		t.Fatalf("registered binaries=%d phones=%d live=%d, want %d %d %d", b, p, l, binaries, phones, live)
	}
}

// without returns lines minus the one at index i.
func without(lines []string, i int) []string {
	return append(append([]string(nil), lines[:i]...), lines[i+1:]...)
}

func headerName(line string) string { return line[:strings.IndexByte(line, ':')] }

func TestHTTPRequiredHeaders(t *testing.T) {
	r := startRelay(t, loop.Config{})
	// A live binary on the id the phones name: a phone wrongly let through
	// would register and show up in r.Phones().
	b := r.binary(t, "srv-hdr")
	endpoints := []struct {
		path  string
		lines []string
	}{
		{"/v1/server", rawBinaryLines("srv-hdr-2")},
		{"/v1/client", rawPhoneLines("srv-hdr")},
	}
	refused := uint64(0)
	for _, ep := range endpoints {
		for i, line := range ep.lines {
			name := headerName(line)
			variants := map[string][]string{
				"missing":    without(ep.lines, i),
				"empty":      append(without(ep.lines, i), name+":"),
				"whitespace": append(without(ep.lines, i), name+": \t  \t"),
				// First value wins: an empty first value is an empty header.
				"empty-first": append(without(ep.lines, i), name+": ", line),
			}
			for variant, lines := range variants {
				t.Run(ep.path+"/"+name+"/"+variant, func(t *testing.T) {
					resp, _ := exchange(t, r.Addr, requestHead(ep.path, withUpgrade(lines)...))
					if resp.StatusCode != http.StatusBadRequest {
						t.Fatalf("status %d, want 400", resp.StatusCode)
					}
					if resp.Header.Get("Upgrade") != "" || resp.Header.Get("Sec-WebSocket-Accept") != "" {
						t.Fatalf("400 carries upgrade headers: %v", resp.Header)
					}
					refused++
					expectRegistered(t, r, 1, 0, 1)
				})
			}
		}
	}
	if got := r.Counters().Reject(loop.RejectHeaders); got != refused {
		t.Fatalf("RejectHeaders = %d, want %d", got, refused)
	}
	// The binary was never disturbed.
	p := r.phone(t, "srv-hdr")
	if id := connIDOf(t, p, b); !strings.HasPrefix(id, "client-srv-hdr-") {
		t.Fatalf("conn_id %q", id)
	}
}

func TestHTTPHeaderNamesCaseInsensitiveValuesTrimmed(t *testing.T) {
	r := startRelay(t, loop.Config{})
	bin := rawUpgrade(t, r.Addr, "/v1/server", []string{
		"x-pyrycode-server: \t srv-case \t ",
		"X-PYRYCODE-VERSION:2",
		"user-AGENT:   pyry/1",
	}, nil)
	expectRegistered(t, r, 1, 0, 1)
	// Trimmed: the phone names the bare id and finds the binary.
	ph := rawUpgrade(t, r.Addr, "/v1/client", []string{
		"X-PYRYCODE-SERVER:srv-case   ",
		"x-pyrycode-token:\ttok\t",
		"USER-AGENT: phone/1",
		"x-pyrycode-device-name: My Phone",
	}, nil)
	expectRegistered(t, r, 1, 1, 2)
	ph.write(wsclient.Masked(true, wsclient.OpText, []byte(`{"k":1}`)))
	f := bin.mustFrame()
	if !regexp.MustCompile(`^\{"conn_id":"client-srv-case-[0-9a-f]{8}","frame":\{"k":1\}\}$`).Match(f.Payload) {
		t.Fatalf("binary got %q", f.Payload)
	}
}

func TestHTTPFirstValueWins(t *testing.T) {
	r := startRelay(t, loop.Config{})
	rawUpgrade(t, r.Addr, "/v1/server", []string{
		"X-Pyrycode-Server: srv-first",
		"X-Pyrycode-Version: 2",
		"User-Agent: pyry/1",
		"X-Pyrycode-Server: srv-second",
	}, nil)
	p, _, err := dial(t, r.Addr, "/v1/client", phoneHeaders("srv-second"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	p.expectClose(t, 4404, "no server with that id")
	waitFor(t, "the refused phone to go", func() bool { return r.Live() == 1 })
	r.phone(t, "srv-first")
	expectRegistered(t, r, 1, 1, 2)
}

func TestHTTPServerIDBounds(t *testing.T) {
	r := startRelay(t, loop.Config{})
	bad := map[string]string{
		"129 bytes":    strings.Repeat("a", 129),
		"quote":        `srv"x`,
		"backslash":    `srv\x`,
		"inner space":  "srv x",
		"inner tab":    "srv\tx",
		"non-ASCII":    "srv-\xc3\xa9",
		"high byte":    "srv-\xff",
		"control byte": "srv\x01x",
		"DEL":          "srv\x7fx",
	}
	for name, id := range bad {
		for _, ep := range []struct{ path, kind string }{{"/v1/server", "binary"}, {"/v1/client", "phone"}} {
			t.Run(ep.kind+"/"+name, func(t *testing.T) {
				lines := rawBinaryLines(id)
				if ep.kind == "phone" {
					lines = rawPhoneLines(id)
				}
				resp, _ := exchange(t, r.Addr, requestHead(ep.path, withUpgrade(lines)...))
				if resp.StatusCode != http.StatusBadRequest {
					t.Fatalf("server-id %q: status %d, want 400", id, resp.StatusCode)
				}
				expectRegistered(t, r, 0, 0, 0)
			})
		}
	}
	t.Run("128 bytes", func(t *testing.T) {
		id := strings.Repeat("z", 100) + "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"[:28]
		if len(id) != 128 {
			t.Fatalf("test id is %d bytes", len(id))
		}
		b := r.binary(t, id)
		p := r.phone(t, id)
		connID := connIDOf(t, p, b)
		if !regexp.MustCompile(`^client-` + regexp.QuoteMeta(id) + `-[0-9a-f]{8}$`).MatchString(connID) {
			t.Fatalf("conn_id %q", connID)
		}
		// The conn_id round-trips through a JSON parser intact.
		b.send(t, `{"conn_id":`+jsonString(connID)+`,"frame":1}`)
		if got := string(p.next(t)); got != "1" {
			t.Fatalf("phone got %q", got)
		}
	})
	t.Run("1 byte", func(t *testing.T) {
		b := r.binary(t, "~")
		p := r.phone(t, "~")
		if id := connIDOf(t, p, b); !regexp.MustCompile(`^client-~-[0-9a-f]{8}$`).MatchString(id) {
			t.Fatalf("conn_id %q", id)
		}
	})
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestHTTPNotUpgrade(t *testing.T) {
	r := startRelay(t, loop.Config{})
	r.binary(t, "srv-up")
	cases := map[string]string{
		"binary plain GET": requestHead("/v1/server", rawBinaryLines("srv-up-2")...),
		"phone plain GET":  requestHead("/v1/client", rawPhoneLines("srv-up")...),
		"binary no Connection": requestHead("/v1/server", append(rawBinaryLines("srv-up-2"),
			"Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: "+wsclient.SampleKey)...),
		"phone no Upgrade": requestHead("/v1/client", append(rawPhoneLines("srv-up"),
			"Connection: Upgrade", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: "+wsclient.SampleKey)...),
	}
	for name, head := range cases {
		t.Run(name, func(t *testing.T) {
			resp, _ := exchange(t, r.Addr, head)
			if resp.StatusCode != http.StatusUpgradeRequired {
				t.Fatalf("status %d, want 426", resp.StatusCode)
			}
			expectRegistered(t, r, 1, 0, 1)
		})
	}
	// An ordinary HTTP client gets the same answer.
	req, _ := http.NewRequest("GET", "http://"+r.Addr+"/v1/client", nil)
	req.Header = phoneHeaders("srv-up")
	resp, err := (&http.Client{Timeout: testTimeout, Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("status %d, want 426", resp.StatusCode)
	}
	expectRegistered(t, r, 1, 0, 1)
}

func TestHTTPUnknownPath(t *testing.T) {
	r := startRelay(t, loop.Config{})
	for _, path := range []string{"/", "/v1", "/v1/", "/v1/servers", "/v1/server/", "/v1/client/x",
		"/V1/SERVER", "/metrics", "/healthz/", "/healthzz", "//v1/server"} {
		t.Run(path, func(t *testing.T) {
			resp, _ := exchange(t, r.Addr, requestHead(path, withUpgrade(rawBinaryLines("srv-404"))...))
			if resp.StatusCode != http.StatusNotFound {
				t.Fatalf("%s: status %d, want 404", path, resp.StatusCode)
			}
			expectRegistered(t, r, 0, 0, 0)
		})
	}
	// Also through gorilla: the dial fails with the response.
	_, resp, err := dial(t, r.Addr, "/v2/server", binaryHeaders("srv-404"))
	if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("dial /v2/server: %v %v", err, resp)
	}
}

var healthRE = regexp.MustCompile(`^\{"status":"ok","version":"9\.8\.7-test","connected_binaries":(\d+),"connected_phones":(\d+),"uptime_seconds":(\d+)\}$`)

// healthVia sends method /healthz (with body, when not empty) through an
// ordinary HTTP client and checks the status and headers; it returns the
// response and its body.
func healthVia(t *testing.T, r *relay, method, reqBody string) (*http.Response, string) {
	t.Helper()
	c := &http.Client{Timeout: testTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	var rb io.Reader
	if reqBody != "" {
		rb = strings.NewReader(reqBody)
	}
	req, err := http.NewRequest(method, "http://"+r.Addr+"/healthz", rb)
	if err != nil {
		t.Fatalf("%s /healthz: %v", method, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s /healthz: %v", method, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s /healthz: %v", method, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s /healthz: status %d", method, resp.StatusCode)
	}
	if ct := resp.Header.Values("Content-Type"); len(ct) != 1 || ct[0] != "application/json; charset=utf-8" {
		t.Fatalf("%s /healthz: Content-Type %q", method, ct)
	}
	if cc := resp.Header.Values("Cache-Control"); len(cc) != 1 || cc[0] != "no-store" {
		t.Fatalf("%s /healthz: Cache-Control %q", method, cc)
	}
	return resp, string(raw)
}

// health fetches /healthz with GET and checks its shape.
func health(t *testing.T, r *relay) (binaries, phones string) {
	t.Helper()
	_, body := healthVia(t, r, "GET", "")
	m := healthRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("body %q", body)
	}
	if !json.Valid([]byte(body)) {
		t.Fatalf("body is not JSON: %q", body)
	}
	return m[1], m[2]
}

func TestHealthz(t *testing.T) {
	r := startRelay(t, loop.Config{Version: "9.8.7-test", GracePeriod: shortGrace})
	expect := func(binaries, phones string) {
		t.Helper()
		if b, p := health(t, r); b != binaries || p != phones {
			t.Fatalf("healthz binaries=%s phones=%s, want %s %s", b, p, binaries, phones)
		}
	}
	expect("0", "0")
	b1 := r.binary(t, "srv-h1")
	expect("1", "0")
	b2 := r.binary(t, "srv-h2")
	p1 := r.phone(t, "srv-h1")
	r.phone(t, "srv-h1")
	r.phone(t, "srv-h2")
	expect("2", "3")

	// Refusals after the 101 are not counted.
	p, _, err := dial(t, r.Addr, "/v1/client", phoneHeaders("srv-none"))
	if err != nil {
		t.Fatal(err)
	}
	p.expectClose(t, 4404, "no server with that id")
	expect("2", "3")

	_ = p1.conn.Close()
	waitFor(t, "phone detached", func() bool { return r.Phones() == 2 })
	expect("2", "2")
	_ = b2.conn.Close()
	waitFor(t, "binary gone, its grace over", func() bool { return r.Binaries() == 1 && r.Phones() == 1 })
	expect("1", "1")
	_ = b1.conn.Close()
	waitFor(t, "binary gone", func() bool { return r.Binaries() == 0 && r.Phones() == 0 })
	expect("0", "0")

	// The query string is ignored; HEAD has the headers and no body.
	rc := rawDial(t, r.Addr)
	rc.write([]byte("HEAD /healthz?x=1 HTTP/1.1\r\nHost: relay\r\n\r\n"))
	resp, err := rc.ReadResponse(&http.Request{Method: "HEAD"})
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("HEAD /healthz: %v %v", err, resp)
	}
	rc.expectEOF()
}

// TestHealthzAnyMethod: /healthz answers every method 200 with the headers
// and JSON body a GET gets (HEAD: the headers only), as the reference relay
// does; a request body is never read and does not spoil the answer (issue
// 11 item 7: POST got 405).
func TestHealthzAnyMethod(t *testing.T) {
	r := startRelay(t, loop.Config{Version: "9.8.7-test"})
	r.binary(t, "srv-any")
	r.phone(t, "srv-any")
	_, want := healthVia(t, r, "GET", "")
	if m := healthRE.FindStringSubmatch(want); m == nil || m[1] != "1" || m[2] != "1" {
		t.Fatalf("GET /healthz body %q", want)
	}
	big := strings.Repeat("x", 256<<10) // more than the socket takes at once
	for _, tc := range []struct{ method, body string }{
		{"POST", ""}, {"POST", `{"probe":true}`}, {"POST", big}, {"PUT", "x"},
		{"DELETE", ""}, {"PATCH", "y"}, {"OPTIONS", ""}, {"PURGE", ""},
	} {
		if _, got := healthVia(t, r, tc.method, tc.body); got != want {
			t.Fatalf("%s /healthz (%d-byte body): body %q, want %q", tc.method, len(tc.body), got, want)
		}
	}
	resp, got := healthVia(t, r, "HEAD", "")
	if got != "" || resp.ContentLength != int64(len(want)) {
		t.Fatalf("HEAD /healthz: body %q, Content-Length %d, want none and %d", got, resp.ContentLength, len(want))
	}
	if got := r.Counters().Reject(loop.RejectMethod); got != 0 {
		t.Fatalf("RejectMethod = %d, want 0", got)
	}
}

func TestHTTPMaxConnections(t *testing.T) {
	r := startRelay(t, loop.Config{MaxConnections: 3})
	b := r.binary(t, "srv-cap")
	p1 := r.phone(t, "srv-cap")
	r.phone(t, "srv-cap")
	expectRegistered(t, r, 1, 2, 3)

	for _, ep := range []struct {
		path string
		h    http.Header
	}{{"/v1/client", phoneHeaders("srv-cap")}, {"/v1/server", binaryHeaders("srv-cap-2")}} {
		_, resp, err := dial(t, r.Addr, ep.path, ep.h)
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("%s at the cap: err %v, resp %v; want 503", ep.path, err, resp)
		}
		expectRegistered(t, r, 1, 2, 3)
	}
	// Raw: the 503 has an empty body.
	resp, body := exchange(t, r.Addr, requestHead("/v1/client", withUpgrade(rawPhoneLines("srv-cap"))...))
	if resp.StatusCode != http.StatusServiceUnavailable || len(body) != 0 {
		t.Fatalf("status %d body %q, want 503 and no body", resp.StatusCode, body)
	}
	if got := r.Counters().Reject(loop.RejectCapacity); got != 3 {
		t.Fatalf("RejectCapacity = %d, want 3", got)
	}
	// /healthz is not a WebSocket connection and is still served.
	if resp, _ := exchange(t, r.Addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("healthz at the cap: %d", resp.StatusCode)
	}

	_ = p1.conn.Close()
	waitFor(t, "a connection to close", func() bool { return r.Live() == 2 })
	p3 := r.phone(t, "srv-cap")
	if id := connIDOf(t, p3, b); !strings.HasPrefix(id, "client-srv-cap-") {
		t.Fatalf("conn_id %q", id)
	}
	expectRegistered(t, r, 1, 2, 3)
}

func TestHTTPPipelinedFrames(t *testing.T) {
	r := startRelay(t, loop.Config{})
	b := r.binary(t, "srv-pipe")
	// Two data frames and a ping in the same write as the request head.
	pipelined := append(wsclient.Masked(true, wsclient.OpText, []byte(`{"first":true}`)), wsclient.Masked(true, wsclient.OpBinary, []byte(`[2]`))...)
	pipelined = append(pipelined, wsclient.Masked(true, wsclient.OpPing, []byte("pipe-ping"))...)
	ph := rawUpgrade(t, r.Addr, "/v1/client", rawPhoneLines("srv-pipe"), pipelined)
	re := regexp.MustCompile(`^\{"conn_id":"(client-srv-pipe-[0-9a-f]{8})","frame":(.*)\}$`)
	m1 := re.FindStringSubmatch(string(b.next(t)))
	m2 := re.FindStringSubmatch(string(b.next(t)))
	if m1 == nil || m2 == nil || m1[2] != `{"first":true}` || m2[2] != `[2]` || m1[1] != m2[1] {
		t.Fatalf("binary got %v then %v", m1, m2)
	}
	f := ph.mustFrame()
	if f.Op != wsclient.OpPong || string(f.Payload) != "pipe-ping" {
		t.Fatalf("got op %#x %q, want the pong", f.Op, f.Payload)
	}

	// A binary's pipelined envelope is routed too.
	rawUpgrade(t, r.Addr, "/v1/server", rawBinaryLines("srv-pipe-2"),
		wsclient.Masked(true, wsclient.OpText, []byte(`{"conn_id":"client-srv-pipe-2-00000000","frame":1}`)))
	waitFor(t, "the pipelined envelope", func() bool { return r.Counters().Drop(loop.DropUnknownConnID) == 1 })
}

func TestHTTPOversizedHead(t *testing.T) {
	t.Run("default limit, complete head", func(t *testing.T) {
		r := startRelay(t, loop.Config{})
		lines := append(rawBinaryLines("srv-big"), "X-Pad: "+strings.Repeat("p", 9000))
		resp, _ := exchange(t, r.Addr, requestHead("/v1/server", withUpgrade(lines)...))
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d, want 431", resp.StatusCode)
		}
		expectRegistered(t, r, 0, 0, 0)
	})
	t.Run("head never ends", func(t *testing.T) {
		r := startRelay(t, loop.Config{MaxRequestHeaderBytes: 1024})
		rc := rawDial(t, r.Addr)
		rc.write([]byte("GET /v1/server HTTP/1.1\r\nX-Pad: " + strings.Repeat("p", 2000)))
		resp, _ := rc.response()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d, want 431", resp.StatusCode)
		}
		if got := r.Counters().Reject(loop.RejectHeaderSize); got != 1 {
			t.Fatalf("RejectHeaderSize = %d", got)
		}
	})
	t.Run("exactly at the limit", func(t *testing.T) {
		const limit = 1024
		r := startRelay(t, loop.Config{MaxRequestHeaderBytes: limit})
		base := requestHead("/v1/server", append(withUpgrade(rawBinaryLines("srv-edge")), "X-Pad: ")...)
		padLen := limit - len(base)
		ok := requestHead("/v1/server", append(withUpgrade(rawBinaryLines("srv-edge")), "X-Pad: "+strings.Repeat("p", padLen))...)
		over := requestHead("/v1/server", append(withUpgrade(rawBinaryLines("srv-edge")), "X-Pad: "+strings.Repeat("p", padLen+1))...)
		if len(ok) != limit || len(over) != limit+1 {
			t.Fatalf("test heads are %d and %d bytes", len(ok), len(over))
		}
		resp, _ := exchange(t, r.Addr, over)
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("%d-byte head: status %d, want 431", len(over), resp.StatusCode)
		}
		expectRegistered(t, r, 0, 0, 0)
		resp, _ = exchange(t, r.Addr, ok)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("%d-byte head: status %d, want 101", len(ok), resp.StatusCode)
		}
		expectRegistered(t, r, 1, 0, 1)
	})
}

// Registry outcomes after the 101 (docs/protocol.md, "Server-ids: claim,
// grace, takeover" and "Close codes").

func TestRegistryPhoneUnknownServer(t *testing.T) {
	r := startRelay(t, loop.Config{})
	r.binary(t, "srv-known")
	p, resp, err := dial(t, r.Addr, "/v1/client", phoneHeaders("srv-unknown"))
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("dial: %v", err)
	}
	p.expectClose(t, 4404, "no server with that id")
	waitFor(t, "the refused phone to go", func() bool { return r.Live() == 1 })
	expectRegistered(t, r, 1, 0, 1)
	if got := r.Counters().RegistryNoServer.Load(); got != 1 {
		t.Fatalf("RegistryNoServer = %d", got)
	}
	// Raw: the close frame is the only frame, and the relay ends the stream.
	rc := rawPhone(t, r.Addr, "srv-unknown")
	rc.expectClose(4404, "no server with that id")
}

func TestRegistryDuplicateBinary(t *testing.T) {
	r := startRelay(t, loop.Config{})
	b1 := r.binary(t, "srv-dup")
	p := r.phone(t, "srv-dup")
	connID := connIDOf(t, p, b1)

	b2, _, err := dial(t, r.Addr, "/v1/server", binaryHeaders("srv-dup"))
	if err != nil {
		t.Fatal(err)
	}
	b2.expectClose(t, 4409, "server-id already claimed")
	if got := r.Counters().RegistryClaimed.Load(); got != 1 {
		t.Fatalf("RegistryClaimed = %d", got)
	}
	waitFor(t, "the refused binary to go", func() bool { return r.Live() == 2 })
	expectRegistered(t, r, 1, 1, 2)

	// The first binary keeps its slot and its phone, both ways.
	p.send(t, `{"after":1}`)
	if got := string(b1.next(t)); got != splice(connID, []byte(`{"after":1}`)) {
		t.Fatalf("binary got %s", got)
	}
	b1.send(t, `{"conn_id":"`+connID+`","frame":"still here"}`)
	if got := string(p.next(t)); got != `"still here"` {
		t.Fatalf("phone got %s", got)
	}
	// The refused binary's departure touched nothing: no notice, no close.
	p2 := r.phone(t, "srv-dup")
	p2.send(t, `0`)
	if got := string(b1.next(t)); !strings.HasSuffix(got, `","frame":0}`) {
		t.Fatalf("binary got %s", got)
	}
}

func TestRegistryPhonesPerServer(t *testing.T) {
	for _, n := range []int{0, 3} { // 0: the default, 16
		limit := n
		if limit == 0 {
			limit = loop.DefaultPhonesPerServer
		}
		t.Run(strconv.Itoa(limit), func(t *testing.T) {
			r := startRelay(t, loop.Config{PhonesPerServer: n})
			b := r.binary(t, "srv-many")
			ids := map[string]*peer{}
			var first *peer
			for i := 0; i < limit; i++ {
				p := r.phone(t, "srv-many")
				if first == nil {
					first = p
				}
				id := connIDOf(t, p, b)
				if !regexp.MustCompile(`^client-srv-many-[0-9a-f]{8}$`).MatchString(id) {
					t.Fatalf("conn_id %q", id)
				}
				if ids[id] != nil {
					t.Fatalf("conn_id %s given twice", id)
				}
				ids[id] = p
			}
			expectRegistered(t, r, 1, limit, limit+1)

			over, _, err := dial(t, r.Addr, "/v1/client", phoneHeaders("srv-many"))
			if err != nil {
				t.Fatal(err)
			}
			over.expectClose(t, 4429, "too many phones for server-id")
			if got := r.Counters().RegistryPhonesCap.Load(); got != 1 {
				t.Fatalf("RegistryPhonesCap = %d", got)
			}
			waitFor(t, "the refused phone to go", func() bool { return r.Live() == limit+1 })
			expectRegistered(t, r, 1, limit, limit+1)
			// Another server-id is unaffected by this one's cap.
			r.binary(t, "srv-other")
			r.phone(t, "srv-other")

			// Every admitted phone still routes both ways.
			for id, p := range ids {
				b.send(t, `{"conn_id":"`+id+`","frame":"`+id+`"}`)
				if got := string(p.next(t)); got != `"`+id+`"` {
					t.Fatalf("phone %s got %s", id, got)
				}
			}
			// A freed place is given again.
			_ = first.conn.Close()
			waitFor(t, "a phone to detach", func() bool { return r.Phones() == limit })
			r.phone(t, "srv-many")
			expectRegistered(t, r, 2, limit+1, limit+3)
		})
	}
}

func TestRegistryNoBinaryBeforePhoneCap(t *testing.T) {
	r := startRelay(t, loop.Config{PhonesPerServer: 2, GracePeriod: shortGrace})
	b := r.binary(t, "srv-order")
	p1 := r.phone(t, "srv-order")
	p2 := r.phone(t, "srv-order")
	_ = b.conn.Close()
	p1.expectClose(t, 1000, "")
	p2.expectClose(t, 1000, "")
	waitFor(t, "the slot to go", func() bool { return r.Binaries() == 0 })
	// The id's phones were at the cap; with no binary the answer is 4404.
	p3, _, err := dial(t, r.Addr, "/v1/client", phoneHeaders("srv-order"))
	if err != nil {
		t.Fatal(err)
	}
	p3.expectClose(t, 4404, "no server with that id")
	if got := r.Counters().RegistryPhonesCap.Load(); got != 0 {
		t.Fatalf("RegistryPhonesCap = %d", got)
	}
}

// The refusal is a close frame after a 101, not an HTTP error, for gorilla
// too: the dial itself succeeds.
func TestRegistryRefusalIsNotHTTPError(t *testing.T) {
	r := startRelay(t, loop.Config{})
	c, resp, err := dialer.Dial("ws://"+r.Addr+"/v1/client", phoneHeaders("nobody"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	_, _, err = c.ReadMessage()
	if !websocket.IsCloseError(err, 4404) {
		t.Fatalf("read: %v", err)
	}
}

// A refused connection ends as soon as the client answers the close frame:
// it must not hold a connection slot until CloseLinger runs out.
func TestRegistryRefusalEndsOnCloseReply(t *testing.T) {
	r := startRelay(t, loop.Config{CloseLinger: time.Hour, MaxConnections: 2})
	b := r.binary(t, "srv-rf")
	for _, tc := range []struct {
		path, id string
		h        http.Header
		code     int
	}{
		{"/v1/client", "srv-none", phoneHeaders("srv-none"), 4404},
		{"/v1/server", "srv-rf", binaryHeaders("srv-rf"), 4409},
	} {
		// gorilla answers the close frame (and keeps the socket open).
		p, _, err := dial(t, r.Addr, tc.path, tc.h)
		if err != nil {
			t.Fatal(err)
		}
		gotCode, _ := p.closed(t)
		if gotCode != tc.code {
			t.Fatalf("%s: closed with %d, want %d", tc.path, gotCode, tc.code)
		}
		waitFor(t, "the refused connection to end", func() bool { return r.Live() == 1 })

		// Raw: the answer may follow in the same segment as other frames.
		rc := rawUpgrade(t, r.Addr, tc.path, rawLines(tc.path, tc.id), nil)
		f := rc.mustFrame()
		if f.Op != wsclient.OpClose {
			t.Fatalf("got op %#x", f.Op)
		}
		rc.write(append(wsclient.Masked(true, wsclient.OpText, []byte(`"ignored"`)), wsclient.Masked(true, wsclient.OpClose, f.Payload[:2])...))
		rc.expectEOF()
		waitFor(t, "the refused connection to end", func() bool { return r.Live() == 1 })
	}
	// Every slot freed: a phone fits under the cap of 2 again.
	p := r.phone(t, "srv-rf")
	connIDOf(t, p, b)
}

// Origin is not checked, no subprotocol is chosen and no extension is
// negotiated, whatever the client offers; the upgrade headers themselves
// are matched case-insensitively, as tokens.
func TestHTTPUpgradeNegotiatesNothing(t *testing.T) {
	r := startRelay(t, loop.Config{})
	head := requestHead("/v1/server", append(rawBinaryLines("srv-neg"),
		"upgrade: WebSocket",
		"CONNECTION: keep-alive, Upgrade",
		"sec-websocket-version: 13",
		"sec-websocket-key: "+wsclient.SampleKey,
		"Origin: https://evil.example",
		"Sec-WebSocket-Protocol: chat, superchat",
		"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
	)...)
	rc := rawDial(t, r.Addr)
	rc.write([]byte(head))
	resp, _ := rc.response()
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != wsclient.Accept(wsclient.SampleKey) {
		t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
	}
	for _, h := range []string{"Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions"} {
		if v := resp.Header.Values(h); len(v) != 0 {
			t.Fatalf("response negotiates %s: %q", h, v)
		}
	}
	// gorilla offering compression and a subprotocol still gets neither.
	d := websocket.Dialer{HandshakeTimeout: testTimeout, EnableCompression: true, Subprotocols: []string{"v2"}}
	h := phoneHeaders("srv-neg")
	h.Set("Origin", "null")
	c, resp, err := d.Dial("ws://"+r.Addr+"/v1/client", h)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if c.Subprotocol() != "" || resp.Header.Get("Sec-WebSocket-Extensions") != "" {
		t.Fatalf("negotiated %q / %q", c.Subprotocol(), resp.Header.Get("Sec-WebSocket-Extensions"))
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"z":1}`)); err != nil {
		t.Fatal(err)
	}
	f := rc.mustFrame()
	if f.Op != wsclient.OpText || !regexp.MustCompile(`^\{"conn_id":"client-srv-neg-[0-9a-f]{8}","frame":\{"z":1\}\}$`).Match(f.Payload) {
		t.Fatalf("binary got %q", f.Payload)
	}
}

// The token is presence-only: any non-empty value is accepted as is.
func TestHTTPTokenNotParsed(t *testing.T) {
	r := startRelay(t, loop.Config{})
	r.binary(t, "srv-tok")
	for _, tok := range []string{"x", `a"b\c, d;e=f`, "Bearer \xc3\xa9\xff", strings.Repeat("t", 4000)} {
		rawUpgrade(t, r.Addr, "/v1/client", []string{
			"X-Pyrycode-Server: srv-tok", "X-Pyrycode-Token: " + tok, "User-Agent: u",
		}, nil)
	}
	expectRegistered(t, r, 1, 4, 5)
}

// Switchboard decides a claim (and a phone's attachment) before its 101 is
// written: once a dial returns, the registry already shows it, and a phone
// dialled right after a binary's upgrade never gets a spurious 4404.
func TestRegisteredBeforeUpgradeAnswered(t *testing.T) {
	r := startRelay(t, loop.Config{})
	for i := 0; i < 300; i++ {
		id := "srv-race-" + strconv.Itoa(i)
		b := rawUpgrade(t, r.Addr, "/v1/server", rawBinaryLines(id), nil)
		if got := r.Binaries(); got != 1 {
			t.Fatalf("iteration %d: 101 received, Binaries() = %d", i, got)
		}
		p := rawUpgrade(t, r.Addr, "/v1/client", rawPhoneLines(id), nil)
		if got := r.Phones(); got != 1 {
			t.Fatalf("iteration %d: 101 received, Phones() = %d", i, got)
		}
		p.write(wsclient.Masked(true, wsclient.OpText, []byte(`1`)))
		if f := b.mustFrame(); f.Op != wsclient.OpText {
			t.Fatalf("iteration %d: binary got op %#x %q", i, f.Op, f.Payload)
		}
		_ = p.Conn.Close()
		_ = b.Conn.Close()
		waitFor(t, "both to go", func() bool { return r.Live() == 0 && r.Binaries() == 0 })
	}
}

// TestAnswerClearsHandshakeDeadline: a client that keeps its socket open
// after a refusal or a /healthz answer is torn down when CloseLinger runs
// out, counted only under the refusal's own reason, never as a
// handshake_timeout (issue 11 item 10: the handshake deadline stayed armed
// after the answer, fired during the linger and counted one more close).
func TestAnswerClearsHandshakeDeadline(t *testing.T) {
	const handshake, linger = 100 * time.Millisecond, 600 * time.Millisecond
	r := startRelay(t, loop.Config{HandshakeTimeout: handshake, CloseLinger: linger, MaxRequestHeaderBytes: 1024})
	cases := []struct {
		what   string
		head   string
		status int
		why    loop.RejectReason // -1: an answer, not a refusal
	}{
		{"missing header", requestHead("/v1/client", withUpgrade([]string{"User-Agent: x", "X-Pyrycode-Server: s"})...), 400, loop.RejectHeaders},
		{"malformed", "GET /v1/client HTTP/1.1\r\nno colon\r\n\r\n", 400, loop.RejectMalformed},
		{"too large", requestHead("/v1/client", "X-Pad: "+strings.Repeat("p", 2048)), 431, loop.RejectHeaderSize},
		{"unknown path", requestHead("/nowhere"), 404, loop.RejectNotFound},
		{"wrong method", strings.Replace(requestHead("/v1/server", withUpgrade(rawBinaryLines("b"))...), "GET ", "PUT ", 1), 405, loop.RejectMethod},
		{"not an upgrade", requestHead("/v1/server", rawBinaryLines("b")...), 426, loop.RejectNotUpgrade},
		{"healthz", requestHead("/healthz"), 200, -1},
	}
	type lingerer struct {
		rc         *rawClient
		answered   time.Time
		tornDownIn time.Duration
	}
	ls := make([]*lingerer, len(cases))
	for i, tc := range cases {
		rc := rawDial(t, r.Addr)
		rc.write([]byte(tc.head))
		resp, _ := rc.response()
		if resp.StatusCode != tc.status {
			t.Fatalf("%s: status %d, want %d", tc.what, resp.StatusCode, tc.status)
		}
		rc.expectEOF() // the relay half-closed after its answer; ours stays open
		ls[i] = &lingerer{rc: rc, answered: time.Now()}
	}
	// The relay's full close is seen as a failed write: once its socket is
	// gone, a byte we send is answered with a reset and the next write fails.
	open := len(ls)
	waitFor(t, "every lingering client torn down", func() bool {
		for _, l := range ls {
			if l.tornDownIn != 0 {
				continue
			}
			if _, err := l.rc.Conn.Write([]byte{'x'}); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("still open after %s", testTimeout)
				}
				l.tornDownIn = time.Since(l.answered)
				open--
			}
		}
		return open == 0
	})
	for i, l := range ls {
		if l.tornDownIn < linger/2 {
			t.Errorf("%s: torn down %v after the answer, before the close linger %v (the handshake deadline %v fired)",
				cases[i].what, l.tornDownIn, linger, handshake)
		}
	}
	c := r.Counters()
	for why := range c.Closes {
		if got := c.Closes[why].Load(); got != 0 {
			t.Errorf("%s closes = %d, want none: each answer is counted once, as its refusal", loop.CloseReason(why), got)
		}
	}
	for _, tc := range cases {
		if tc.why >= 0 && c.Reject(tc.why) != 1 {
			t.Errorf("%s: %s = %d, want 1", tc.what, tc.why, c.Reject(tc.why))
		}
	}
}
