// Package wsframe holds the WebSocket pieces Switchboard needs on its hot path:
// parsing frame headers out of a byte slice that may hold only part of a frame,
// writing server frame headers into a caller's buffer, close-frame bodies, and
// the HTTP/1.1 upgrade request parser and response writer.
//
// Nothing here reads from or writes to a connection and nothing allocates: every
// function works on slices the caller owns, so the event loop can hand in the
// bytes netpoll already buffered without copying them first. Frame types and the
// unmasking cipher come from github.com/gobwas/ws.
package wsframe
