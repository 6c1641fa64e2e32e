// Package haproxycfg runs the shipped deploy/haproxy.cfg on loopback: it
// rewrites the file only where a test or a measurement box differs from a
// balancer (loopback binds on free ports, a certificate made here, one
// relay node, no privileges, a maxconn the box's open-file limit allows)
// and makes the self-signed certificate it serves. swload's wss:// tests
// and bench/stackmem share it, so both run the same config.
package haproxycfg
