package registry

import (
	"testing"
	"unsafe"
)

// A phone keeps its server-id as ServerIDOf(its conn_id): that must be the
// server-id it attached to, for any server-id (dashes, the separator, and
// non-ASCII included), and it must share the conn_id's bytes, or the phone
// pays for a second string again.
func TestServerIDOfSharesTheConnID(t *testing.T) {
	for _, sid := range []string{"s", "a-b-c", "srv-12345678", "-", "ünï-cødé", "x" + string(make([]byte, 200))} {
		r := newReg(4)
		if _, _, err := r.Claim(sid, &conn{"b"}, nil); err != nil {
			t.Fatal(err)
		}
		id, _, err := r.AddPhone(sid, &conn{"p"})
		if err != nil {
			t.Fatalf("AddPhone(%q): %v", sid, err)
		}
		got := ServerIDOf(id)
		if got != sid {
			t.Fatalf("ServerIDOf(%q) = %q, want %q", id, got, sid)
		}
		start, end := uintptr(unsafe.Pointer(unsafe.StringData(id))), uintptr(unsafe.Pointer(unsafe.StringData(id)))+uintptr(len(id))
		if p := uintptr(unsafe.Pointer(unsafe.StringData(got))); p < start || p+uintptr(len(got)) > end {
			t.Fatalf("ServerIDOf(%q) is a copy, not a part of the conn_id", id)
		}
	}
}
