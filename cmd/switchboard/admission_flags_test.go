package main

import (
	"bytes"
	"os"
	"testing"
	"time"
)

func TestAdmissionFlagDefaults(t *testing.T) {
	var errb bytes.Buffer
	o, err := parseFlags(nil, os.Environ(), &errb)
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if c.RateLimitBurst != 20 || c.RateLimitInterval != 6*time.Second || c.RateLimitMaxSources != 1<<20 ||
		c.ProxyProtocol || c.TrustXForwardedFor {
		t.Fatalf("defaults: burst %d interval %s max %d proxy %v xff %v", c.RateLimitBurst, c.RateLimitInterval,
			c.RateLimitMaxSources, c.ProxyProtocol, c.TrustXForwardedFor)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestAdmissionFlagsFromEnvironment(t *testing.T) {
	t.Setenv("SWITCHBOARD_RATE_LIMIT_BURST", "7")
	t.Setenv("SWITCHBOARD_RATE_LIMIT_INTERVAL", "250ms")
	t.Setenv("SWITCHBOARD_RATE_LIMIT_MAX_SOURCES", "4096")
	t.Setenv("SWITCHBOARD_PROXY_PROTOCOL", "true")
	t.Setenv("SWITCHBOARD_TRUST_X_FORWARDED_FOR", "true")
	var errb bytes.Buffer
	o, err := parseFlags([]string{"--rate-limit-burst", "0", "--trust-x-forwarded-for=false"}, os.Environ(), &errb)
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if c.RateLimitInterval != 250*time.Millisecond || c.RateLimitMaxSources != 4096 || !c.ProxyProtocol {
		t.Fatalf("environment not applied: %+v", c)
	}
	if c.RateLimitBurst != 0 || c.TrustXForwardedFor {
		t.Fatalf("flags should win over environment: burst %d xff %v", c.RateLimitBurst, c.TrustXForwardedFor)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("burst 0 (limit off) should validate: %v", err)
	}
	c.Defaults() // what loop.New does: 0 stays "off", not the default burst
	if c.RateLimitBurst != 0 {
		t.Fatalf("burst 0 became %d after Defaults", c.RateLimitBurst)
	}
}

// Checked through parseFlags and Validate rather than run, so a value that
// wrongly passed would fail the test instead of starting a relay that
// waits for a signal.
func TestBadAdmissionFlagsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"--rate-limit-burst", "-1"},
		{"--rate-limit-interval", "0"},
		{"--rate-limit-interval", "-1s"},
		{"--rate-limit-max-sources", "10"},
		{"--rate-limit-burst", "1000000", "--rate-limit-interval", "1h"},
		{"--proxy-protocol=maybe"},
	} {
		var errb bytes.Buffer
		o, err := parseFlags(args, os.Environ(), &errb)
		if err == nil {
			err = o.cfg.Validate()
		}
		if err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}
