package loop_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"switchboard/loop"
)

// healthAnswer reads /healthz's status and its JSON keys, in order.
func healthAnswer(t *testing.T, addr, method string) (int, []string, map[string]any) {
	t.Helper()
	rc := rawDial(t, addr)
	rc.write([]byte(method + " /healthz HTTP/1.1\r\nHost: relay.test\r\n\r\n"))
	if method == "HEAD" {
		resp, err := rc.ReadResponse(&http.Request{Method: "HEAD"})
		if err != nil {
			t.Fatalf("HEAD /healthz: %v", err)
		}
		_ = rc.Conn.Close()
		return resp.StatusCode, nil, nil
	}
	resp, body := rc.response()
	_ = rc.Conn.Close()
	var fields map[string]any
	if err := json.Unmarshal(body, &fields); err != nil {
		t.Fatalf("/healthz body %q: %v", body, err)
	}
	var keys []string
	dec := json.NewDecoder(bytes.NewReader(body))
	_, _ = dec.Token() // {
	for dec.More() {
		k, _ := dec.Token()
		keys = append(keys, k.(string))
		var v any
		_ = dec.Decode(&v)
	}
	return resp.StatusCode, keys, fields
}

// /healthz is 200 "ok" while serving and 503 "draining" with the same five
// keys from the moment a drain starts, so a balancer's check takes the node
// out while its peers are still saying goodbye.
func TestHealthzWhileDraining(t *testing.T) {
	r := startRelay(t, loop.Config{DrainTimeout: time.Minute, CloseLinger: time.Minute})
	bin := rawUpgrade(t, r.Addr, "/v1/server", rawBinaryLines("draining-1"), nil) // never answers the 1001
	waitFor(t, "binary registered", func() bool { return r.Binaries() == 1 })

	wantKeys := []string{"status", "version", "connected_binaries", "connected_phones", "uptime_seconds"}
	code, keys, fields := healthAnswer(t, r.Addr, "GET")
	if code != 200 || fields["status"] != "ok" || !slices.Equal(keys, wantKeys) || fields["connected_binaries"] != 1.0 {
		t.Fatalf("serving: %d %v %v; want 200 ok with keys %v and 1 binary", code, keys, fields, wantKeys)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Shutdown(ctx) }()
	bin.expectClose(1001, "shutting down") // the drain has begun; the binary holds on

	code, keys, fields = healthAnswer(t, r.Addr, "GET")
	if code != 503 || fields["status"] != "draining" || !slices.Equal(keys, wantKeys) {
		t.Fatalf("draining: %d %v %v; want 503 draining with keys %v", code, keys, fields, wantKeys)
	}
	if code, _, _ := healthAnswer(t, r.Addr, "HEAD"); code != 503 {
		t.Fatalf("HEAD while draining: %d, want 503", code)
	}
	cancel() // end the drain without the binary's answer
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("Shutdown did not return after its context ended")
	}
}
