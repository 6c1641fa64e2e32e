package loop

import (
	"testing"

	"switchboard/wsframe"
)

// The close table is the one source of close codes and texts: these are
// the properties a new row must keep.
func TestCloseRules(t *testing.T) {
	counted := make(map[CloseReason]bool)
	for cause := range numCloseCauses {
		r := closeRules[cause]
		counted[r.reason] = true
		switch {
		case r.drop:
			if r.code != 0 || r.text != "" || r.discard || r.answer || r.direct {
				t.Errorf("cause %d drops the socket but describes a close frame: %+v", cause, r)
			}
		case r.code == 0:
			// Given at the call: only the peer's echo and the binary's directive.
			if cause != causePeerClose && cause != causeBinaryAsked {
				t.Errorf("cause %d (%s) sends a close frame with no code", cause, r.reason)
			}
		case !wsframe.SendableCloseCode(r.code):
			t.Errorf("cause %d (%s) sends code %d, which no endpoint may put on the wire", cause, r.reason, r.code)
		}
		// A close frame's body is at most 125 bytes: 2 of code, 123 of text.
		if len(r.text) > 123 {
			t.Errorf("cause %d (%s): text of %d bytes does not fit a close frame", cause, r.reason, len(r.text))
		}
	}
	// Every reason the metrics export is one some cause counts: a reason
	// nothing counts would be a series that is always 0.
	for r := range numCloseReasons {
		if !counted[r] {
			t.Errorf("close reason %s is counted by no cause", r)
		}
	}
}

// The text of a 1009 names the configured limit, as the reference relay's does,
// and still fits a close frame at the largest limit the config accepts.
func TestTooBigText(t *testing.T) {
	s := &Server{tooBigReason: tooBigText(1 << 30)}
	got := s.closeText(causeTooBig)
	if got != "read limited at 1073741825 bytes" {
		t.Fatalf("1009 text %q", got)
	}
}
