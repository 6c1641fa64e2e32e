// Package envelope holds the routing envelope codec of the pyrycode relay
// protocol: an allocation-free JSON validator, the builders for envelopes the
// relay sends to a binary, and the scanner for envelopes a binary sends.
//
// Phone frames are spliced verbatim into {"conn_id":…,"frame":…}; they are
// never re-encoded, so validation is what keeps a phone from forging another
// conn_id, and it is strict RFC 8259 (UTF-8 included).
package envelope
