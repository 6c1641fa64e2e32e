package main

import (
	"fmt"
	"io"
	"strings"
)

// The relay's per-source upgrade rate limit (--rate-limit-burst 20, one
// more per 6 s by default, which is what `make run` starts) answers 429 to
// all but the first few connects from each of swload's source addresses.
// The run then looks like a relay failing, so the report says what it is.

// rateLimited is how many upgrades were refused with HTTP 429: connect
// failure kinds http_429, binary_http_429, redial_http_429 and so on.
func rateLimited(failures map[string]int64) int64 {
	var n int64
	for k, v := range failures {
		if strings.HasSuffix(k, "http_429") {
			n += v
		}
	}
	return n
}

// writeRateLimitHint prints the one hint line when upgrades were refused
// with 429.
func writeRateLimitHint(w io.Writer, failures map[string]int64) {
	n := rateLimited(failures)
	if n == 0 {
		return
	}
	fmt.Fprintf(w, "hint: the relay's per-IP upgrade rate limit refused %d upgrades (HTTP 429); run the relay with --rate-limit-burst 0 for local load tests "+
		"(or spread sources: more --source-ips, or --xff against a relay run with --trust-x-forwarded-for)\n", n)
}
