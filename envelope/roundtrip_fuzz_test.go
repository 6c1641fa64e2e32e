package envelope

import (
	"bytes"
	"strconv"
	"testing"
)

// FuzzBuildScanRoundTrip: what the relay builds for a binary must read back,
// through the same Scan that reads binaries' envelopes, as exactly what went
// in. For any frame that passed Valid and any conn_id the relay could mint
// (printable ASCII without '"' or '\', which need no escaping):
//   - AppendToBinary scans back to that conn_id and the frame's exact bytes
//     (JSON whitespace around the frame is not part of the value, so Scan
//     leaves it out), no close_code and no push_wake; a frame of `null` is
//     "no frame", so that envelope is ErrNothingToDo;
//   - AppendCloseNotice scans back to that conn_id and close code, no frame;
//     code 0 is "no close code", so that notice is ErrNothingToDo.
//
// ToBinarySize and CloseNoticeSize must match what the builders wrote, and
// the builders must append, leaving dst's earlier bytes alone.
//
// Inputs are cut to maxFuzzInput, so frames nest far less than MaxDepth-1,
// the deepest a frame inside an envelope may nest.
func FuzzBuildScanRoundTrip(f *testing.F) {
	// More seeds, one per corner, are in testdata/fuzz/FuzzBuildScanRoundTrip.
	f.Add([]byte(`{"type":"msg","n":[1,2.5,-0,true,null]}`), "client-srv-0123abcd", uint16(1001))
	f.Fuzz(func(t *testing.T, frame []byte, connID string, code uint16) {
		if len(frame) > maxFuzzInput {
			frame = frame[:maxFuzzInput]
		}
		if !Valid(frame) || !mintable(connID) {
			return
		}
		prefix := []byte("prefix")

		env := AppendToBinary(append([]byte(nil), prefix...), connID, frame)
		if !bytes.HasPrefix(env, prefix) {
			t.Fatalf("AppendToBinary overwrote dst: %s", short(env))
		}
		env = env[len(prefix):]
		if n := ToBinarySize(connID, frame); n != len(env) {
			t.Fatalf("ToBinarySize = %d, AppendToBinary wrote %d bytes", n, len(env))
		}
		var e FromBinary
		err := e.Scan(env)
		want := bytes.Trim(frame, " \t\r\n")
		if string(want) == "null" {
			if err != ErrNothingToDo {
				t.Fatalf("Scan(%s) = %v, want ErrNothingToDo for a null frame", short(env), err)
			}
		} else {
			if err != nil {
				t.Fatalf("Scan(%s) = %v", short(env), err)
			}
			if !bytes.Equal(e.Frame, want) {
				t.Fatalf("Scan(%s) frame %s, want %s", short(env), short(e.Frame), short(want))
			}
		}
		if string(e.ConnID) != connID || e.CloseCode != 0 || e.PushWake != nil {
			t.Fatalf("Scan(%s) conn_id %s close_code %d push_wake %s, want %q, 0, none",
				short(env), short(e.ConnID), e.CloseCode, short(e.PushWake), connID)
		}

		notice := AppendCloseNotice(append([]byte(nil), prefix...), connID, code)
		if !bytes.HasPrefix(notice, prefix) {
			t.Fatalf("AppendCloseNotice overwrote dst: %s", short(notice))
		}
		notice = notice[len(prefix):]
		if n := CloseNoticeSize(connID, code); n != len(notice) {
			t.Fatalf("CloseNoticeSize = %d, AppendCloseNotice wrote %d bytes", n, len(notice))
		}
		err = e.Scan(notice)
		switch {
		case code == 0 && err != ErrNothingToDo:
			t.Fatalf("Scan(%s) = %v, want ErrNothingToDo for close code 0", short(notice), err)
		case code != 0 && err != nil:
			t.Fatalf("Scan(%s) = %v", short(notice), err)
		}
		if string(e.ConnID) != connID || e.CloseCode != code || e.Frame != nil || e.PushWake != nil {
			t.Fatalf("Scan(%s) conn_id %s close_code %d frame %s push_wake %s, want %q, %d, none, none",
				short(notice), short(e.ConnID), e.CloseCode, short(e.Frame), short(e.PushWake), connID, code)
		}
		// The notice is exactly the two keys, in order.
		if want := `{"conn_id":"` + connID + `","close_code":` + strconv.Itoa(int(code)) + `}`; string(notice) != want {
			t.Fatalf("notice %s, want %s", short(notice), want)
		}
	})
}

// mintable: a conn_id the relay could build, "client-" + server-id + "-" +
// hex, whose server-id is printable ASCII without '"' or '\'. Space is
// allowed here too: it needs no escaping either.
func mintable(id string) bool {
	if id == "" {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
