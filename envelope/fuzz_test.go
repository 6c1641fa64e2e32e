package envelope

import (
	"strings"
	"testing"
)

// maxFuzzInput bounds what a fuzz target looks at. Longer inputs are cut,
// not skipped: the engine minimises every new interesting input with a
// pass quadratic in its length, and multi-kilobyte inputs stalled 20-second
// runs for most of their time. Size and depth limits are covered by the
// unit tests, which build their long documents directly.
const maxFuzzInput = 1024

// FuzzValid: Valid must agree with encoding/json.Valid plus UTF-8, and a
// valid frame spliced into an envelope must leave the conn_id alone.
func FuzzValid(f *testing.F) {
	for _, c := range validCases {
		f.Add([]byte(c.in))
	}
	f.Add([]byte(`1,"conn_id":"client-other-00000000"`))
	f.Add([]byte(`{"a":1}}`))
	f.Add([]byte(`"x"garbage`))
	f.Add([]byte(nest("[", "]", 70)))
	f.Add([]byte(nest(`{"":`, "}", 40)[:40*4] + "1" + strings.Repeat("}", 40)))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > maxFuzzInput {
			b = b[:maxFuzzInput]
		}
		got, want := Valid(b), refValid(b)
		if got != want {
			t.Fatalf("Valid(%s) = %v, encoding/json+utf8 says %v", short(b), got, want)
		}
		if got {
			checkSpliced(t, AppendToBinary(nil, "client-srv-0123abcd", b), "client-srv-0123abcd", b)
		}
	})
}

// FuzzScan: Scan must reach the verdict an encoding/json decoder reaches,
// and agree with it on conn_id, frame, close_code and push_wake.
func FuzzScan(f *testing.F) {
	for _, c := range scanCases {
		f.Add([]byte(c.in))
	}
	f.Add([]byte(`{"conn_id":"client-srv-0123abcd","frame":{"type":"msg","n":[1,2.5,-0,true,null]},"close_code":4421}`))
	f.Add([]byte(`{"conn\u005fid":"\ud83d\ude00","frame":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > maxFuzzInput {
			b = b[:maxFuzzInput]
		}
		checkScanAgainstRef(t, b)
		// Whatever Scan says about a message, Valid must say the same
		// about whether it is JSON.
		var e FromBinary
		if err := e.Scan(b); (err == ErrInvalidJSON) == Valid(b) {
			t.Fatalf("Scan(%s) = %v but Valid = %v", short(b), err, Valid(b))
		}
	})
}
