package main

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Flags and checks for --mode flood: --max-rss takes a byte count, and
// validateFlood checks everything the mode adds.

// byteSize is a flag holding a byte count: 4294967296, 4GiB, 512MiB, 64KiB.
type byteSize struct{ v *int64 }

func (b byteSize) String() string {
	if b.v == nil {
		return ""
	}
	return strconv.FormatInt(*b.v, 10)
}

func (b byteSize) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	*b.v = n
	return nil
}

func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(t, u.suf); ok {
			t, mult = strings.TrimSpace(rest), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad byte count %q (want e.g. 4294967296, 4GiB, 512MiB)", s)
	}
	return n * mult, nil
}

// loopbackHost reports whether host (a name or an address) is loopback.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// validateFlood checks what --mode flood adds.
func (c *Config) validateFlood() error {
	switch {
	case c.Scenario != scenBinariesToPhones && c.Scenario != scenPhonesToBinary && c.Scenario != scenDeafBinary:
		return fmt.Errorf("--scenario must be %s, %s or %s, got %q", scenBinariesToPhones, scenPhonesToBinary, scenDeafBinary, c.Scenario)
	case c.Procs != 1:
		return fmt.Errorf("--mode flood runs in one process (--procs 1)")
	case c.Flooders < 1:
		return fmt.Errorf("--flooders must be at least 1, got %d", c.Flooders)
	case c.Size < minFloodSize || c.Size > maxPayload:
		return fmt.Errorf("--size must be in %d..%d for --mode flood, got %d", minFloodSize, maxPayload, c.Size)
	case c.CalmInterval < 100*time.Microsecond:
		return fmt.Errorf("--calm-interval must be at least 100µs, got %s", c.CalmInterval)
	case c.Duration/c.CalmInterval >= maxCalmSends:
		return fmt.Errorf("--duration / --calm-interval must stay under %d calm messages", maxCalmSends)
	case c.CalmSize < minPayload || c.CalmSize > maxCalmSize:
		return fmt.Errorf("--calm-size must be in %d..%d, got %d", minPayload, maxCalmSize, c.CalmSize)
	case c.MaxRSS <= 0:
		return fmt.Errorf("--max-rss must be positive")
	case c.RelayPID < 0:
		return fmt.Errorf("--relay-pid must not be negative")
	}
	host, _, _ := net.SplitHostPort(c.Addr)
	if !loopbackHost(host) {
		return fmt.Errorf("--mode flood only dials loopback addresses, not %q", c.Addr)
	}
	if c.MetricsURL != "" {
		u, err := url.Parse(c.MetricsURL)
		if err != nil || u.Scheme != "http" || !loopbackHost(u.Hostname()) {
			return fmt.Errorf("--metrics-url must be an http:// URL on a loopback address, got %q", c.MetricsURL)
		}
	}
	if c.RelayPID > 0 {
		if _, err := readRSS(c.RelayPID); err != nil {
			return fmt.Errorf("--relay-pid: %v", err)
		}
	}
	// Sockets: the calm pair, the flooders and their counterparts.
	need := 2 + c.Flooders + binariesFor(c.Flooders, c.PhonesPerBinary)
	if c.Scenario == scenBinariesToPhones {
		need = 2 + 2*c.Flooders
	}
	if need > socketBudget {
		return fmt.Errorf("--flooders %d needs %d sockets, over the %d one process may hold", c.Flooders, need, socketBudget)
	}
	return nil
}
