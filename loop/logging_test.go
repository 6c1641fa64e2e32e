package loop_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"switchboard/internal/relaytest"
	"switchboard/loop"
)

// logKeys is the closed set of keys the relay logs (docs/operations.md).
var logKeys = map[string]bool{
	"time": true, "level": true, "msg": true,
	"role": true, "remote": true, "source": true, "reason": true, "code": true, "status": true,
	"err": true, "server_id": true, "conn_id": true, "device": true, "reclaimed_phones": true,
	"binaries": true, "phones": true, "still_open": true, "held_bytes": true, "budget_bytes": true,
	"proxy": true, "away": true, "grace_period": true, "phones_dropped": true, "claims_waiting": true, "after": true,
}

func TestLogsCarryNoSecretsAndOnlyKnownKeys(t *testing.T) {
	const token, payload = "tok-SECRET-7f3a9", "PAYLOAD-c0ffee"
	var sink relaytest.LogSink
	log := slog.New(slog.NewJSONHandler(&sink, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := startRelay(t, loop.Config{Logger: log, GracePeriod: shortGrace})

	b := r.binary(t, "logs")
	h := phoneHeaders("logs")
	h.Set("X-Pyrycode-Token", token)
	h.Set("X-Pyrycode-Device-Name", "Bob's \"phone\"\n"+`{"level":"ERROR"}`)
	p := mustDial(t, r.Addr, "/v1/client", h)
	roundTrip(t, p, b, fmt.Sprintf(`{"secret":%q}`, payload))
	b.send(t, payload)                                                 // not JSON: dropped, logged
	b.send(t, fmt.Sprintf(`{"conn_id":%q,"frame":1}`, payload))        // unknown conn_id
	b.send(t, fmt.Sprintf(`{"conn_id":"x","close_code":%q}`, payload)) // bad type
	// A phone that sends non-JSON, one that violates the protocol, a refused
	// request carrying the token.
	p2 := mustDial(t, r.Addr, "/v1/client", h)
	_ = p2.conn.WriteMessage(websocket.TextMessage, []byte(payload))
	p2.expectClose(t, 1000, "")
	missing := phoneHeaders("logs")
	missing.Set("X-Pyrycode-Token", token)
	missing.Del("X-Pyrycode-Server")
	if _, resp, err := dial(t, r.Addr, "/v1/client", missing); err == nil || resp == nil || resp.StatusCode != 400 {
		t.Fatalf("want 400, got %v %v", err, resp)
	}
	waitFor(t, "drops counted", func() bool { return r.Counters().Drop(loop.DropBadEnvelope) == 2 })

	out := sink.String()
	for _, secret := range []string{token, payload} {
		if strings.Contains(out, secret) {
			t.Fatalf("log output contains %q:\n%s", secret, out)
		}
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 5 {
		t.Fatalf("only %d log lines: the test drives nothing worth logging?\n%s", len(lines), out)
	}
	for _, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not one JSON object (a client string broke out?): %q", line)
		}
		for k := range rec {
			if !logKeys[k] {
				t.Errorf("unknown log key %q in %s", k, line)
			}
		}
	}
}

// Behind a proxy that sets X-Forwarded-For (trusted), remote is the
// forwarded client, port 0 where the header names none, and proxy the
// socket peer; without a forwarding header remote is the peer and there is
// no proxy key.
func TestLogsNameTheForwardedClient(t *testing.T) {
	var sink relaytest.LogSink
	log := slog.New(slog.NewJSONHandler(&sink, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := startRelay(t, loop.Config{Logger: log, TrustXForwardedFor: true})

	h := binaryHeaders("fwd")
	h.Set("X-Forwarded-For", "198.51.100.9, 10.0.0.1")
	b := mustDial(t, r.Addr, "/v1/server", h)
	p := mustDial(t, r.Addr, "/v1/client", phoneHeaders("fwd"))
	roundTrip(t, p, b, `{"hi":1}`)

	line := func(msg string) map[string]any {
		t.Helper()
		s, ok := sink.WaitLine(nil, testTimeout, func(l string) bool { return strings.Contains(l, `"msg":"`+msg+`"`) })
		if !ok {
			t.Fatalf("no %q line:\n%s", msg, sink.String())
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(s), &rec); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	bin := line("binary connected")
	if bin["remote"] != "198.51.100.9:0" {
		t.Errorf("binary remote = %#v, want the forwarded client 198.51.100.9:0", bin["remote"])
	}
	if proxy, err := netip.ParseAddrPort(fmt.Sprint(bin["proxy"])); err != nil || !proxy.Addr().IsLoopback() {
		t.Errorf("binary proxy = %#v, want the loopback socket peer", bin["proxy"])
	}
	ph := line("phone connected")
	if remote, err := netip.ParseAddrPort(fmt.Sprint(ph["remote"])); err != nil || !remote.Addr().IsLoopback() || remote.Port() == 0 {
		t.Errorf("phone remote = %#v, want its loopback socket peer with its port", ph["remote"])
	}
	if v, ok := ph["proxy"]; ok {
		t.Errorf("phone with no forwarding header logged proxy %#v", v)
	}
}
