package main

import (
	"errors"

	"switchboard/internal/wsclient"
)

// A relay that shuts down sends every binary and phone a close frame with
// 1001 (going away) and waits for their answers; one that is being
// restarted under load does exactly what it promises. swload counts such
// connections as drained, on a line of their own, and not as errors: a
// drain fails nothing by itself (the exit status stays 0 if nothing else
// went wrong), while what it causes after it (refused redials in churn, a
// window with no phones left) is counted where it happens. Messages a
// drained phone still had in flight are counted as unanswered, not lost.

// codeGoingAway is the close code of a relay shutting down.
const codeGoingAway = 1001

// isDrain reports whether a read ended with the relay's 1001.
func isDrain(err error, payload []byte) bool {
	return errors.Is(err, wsclient.ErrClosed) && closeCode(payload) == codeGoingAway
}

// drainedPhone counts a phone the relay drained with unanswered messages
// still in flight.
func (e *engine) drainedPhone(unanswered uint64) {
	e.drainedPhones.Add(1)
	e.unanswered.Add(int64(unanswered))
}

// closeEcho is the close frame that answers a close with payload: its code
// echoed, as the protocol asks of the side that did not start the close;
// an empty body when the close had no code.
func closeEcho(payload []byte) []byte {
	if len(payload) < 2 {
		return wsclient.AppendMasked(nil, wsclient.OpClose, nil)
	}
	return wsclient.AppendMasked(nil, wsclient.OpClose, payload[:2])
}
