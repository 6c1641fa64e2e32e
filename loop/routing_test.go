package loop_test

import (
	"fmt"
	"regexp"
	"testing"

	"switchboard/loop"
)

func TestPhoneToBinaryAndBack(t *testing.T) {
	r := startRelay(t, loop.Config{})
	b := r.binary(t, "srv-1")
	p := r.phone(t, "srv-1")

	p.send(t, `{"type":"hello", "n": 1}`)
	env := string(b.next(t))
	m := regexp.MustCompile(`^\{"conn_id":"(client-srv-1-[0-9a-f]{8})","frame":\{"type":"hello", "n": 1\}\}$`).FindStringSubmatch(env)
	if m == nil {
		t.Fatalf("binary got %s", env)
	}
	connID := m[1]

	b.send(t, fmt.Sprintf(`{"conn_id":%q,"frame": {"reply" : [1, 2]}}`, connID))
	if got := string(p.next(t)); got != `{"reply" : [1, 2]}` {
		t.Fatalf("phone got %q", got)
	}

	b.send(t, fmt.Sprintf(`{"conn_id":%q,"frame":"bye","close_code":4000}`, connID))
	if got := string(p.next(t)); got != `"bye"` {
		t.Fatalf("phone got %q", got)
	}
	p.expectClose(t, 4000, "")
	waitFor(t, "phone detached", func() bool { return r.Phones() == 0 })
	// The binary asked for that close: no notice. A later phone's frame proves
	// the relay has already processed everything before it.
	p2 := r.phone(t, "srv-1")
	p2.send(t, `2`)
	if got := string(b.next(t)); !regexp.MustCompile(`^\{"conn_id":"client-srv-1-[0-9a-f]{8}","frame":2\}$`).MatchString(got) {
		t.Fatalf("binary got %s, want only the second phone's frame", got)
	}
}
