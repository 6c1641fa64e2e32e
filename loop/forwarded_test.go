package loop

import (
	"net/netip"
	"testing"
)

func TestForwardedFor(t *testing.T) {
	cases := []struct{ in, want string }{
		{"203.0.113.9", "203.0.113.9:0"},
		{" 203.0.113.9 , 10.0.0.1", "203.0.113.9:0"},
		{"2001:db8::7, 10.0.0.1", "[2001:db8::7]:0"},
		{"[2001:db8::7]:4711", "[2001:db8::7]:4711"},
		{"203.0.113.9:80", "203.0.113.9:80"},
		{"::ffff:203.0.113.9", "203.0.113.9:0"},
		{"fe80::1%eth0", "[fe80::1]:0"},
		{"", ""},
		{"unknown", ""},
		{", 203.0.113.9", ""},
		{"203.0.113", ""},
	}
	for _, tc := range cases {
		a, ok := forwardedFor([]byte(tc.in))
		if tc.want == "" {
			if ok {
				t.Errorf("%q: got %v, want none", tc.in, a)
			}
			continue
		}
		if !ok || a != netip.MustParseAddrPort(tc.want) {
			t.Errorf("%q: got %v %v, want %s", tc.in, a, ok, tc.want)
		}
	}
}
