// Package bench holds Switchboard's benchmarks (go test -bench ./bench):
// micro benchmarks of the forwarding path's pieces, and the relay against a
// goroutine-per-connection baseline, each in its own process, driven by the
// allocation-free raw client in internal/wsclient, so a benchmark's
// allocation count is the relay's, not the client's.
package bench
