package main

import (
	"bufio"
	"bytes"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// runEnv runs the command with exactly environ as its SWITCHBOARD_
// variables and returns the exit status, stdout and stderr.
func runEnv(t *testing.T, environ map[string]string, args ...string) (int, string, string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, envPrefix) {
			t.Setenv(name, "") // t.Setenv restores it after the test
			os.Unsetenv(name)
		}
	}
	for k, v := range environ {
		t.Setenv(k, v)
	}
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// oneLine fails unless stderr is exactly one "switchboard: …" line
// containing every want.
func oneLine(t *testing.T, stderr string, want ...string) {
	t.Helper()
	if !strings.HasPrefix(stderr, "switchboard: ") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr %q: want one line", stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr %q does not name %q", stderr, w)
		}
	}
}

func TestUnknownEnvironmentVariableNamesTheClosest(t *testing.T) {
	for typo, want := range map[string]string{
		"SWITCHBOARD_MAX_CONECTIONS":  "SWITCHBOARD_MAX_CONNECTIONS",
		"SWITCHBOARD_GRACE":           "SWITCHBOARD_GRACE_PERIOD",
		"SWITCHBOARD_FCM_CREDENTIALS": "SWITCHBOARD_FCM_CREDENTIALS_FILE",
		"SWITCHBOARD_RATELIMIT_BURST": "SWITCHBOARD_RATE_LIMIT_BURST",
	} {
		code, _, stderr := runEnv(t, map[string]string{typo: "1"}, "--listen", "127.0.0.1:0")
		if code != 2 {
			t.Errorf("%s: exit %d, want 2", typo, code)
		}
		oneLine(t, stderr, "unknown environment variable "+typo, "did you mean "+want+"?")
	}
}

// SWITCHBOARD_VERSION=true in an environment file would make the service
// print its version and exit 0 at every start.
func TestVersionIsAFlagOnly(t *testing.T) {
	code, stdout, stderr := runEnv(t, map[string]string{"SWITCHBOARD_VERSION": "true"})
	if code != 2 || stdout != "" {
		t.Fatalf("exit %d, stdout %q; want 2 and nothing printed", code, stdout)
	}
	oneLine(t, stderr, "SWITCHBOARD_VERSION", "--version is a command-line flag only")
}

// SWITCHBOARD_UPGRADE_FD in an environment file would make every start
// wait for a handover nobody sends; SWITCHBOARD_UPGRADE_TIMEOUT is an
// ordinary setting.
func TestUpgradeFDIsAFlagOnly(t *testing.T) {
	code, _, stderr := runEnv(t, map[string]string{"SWITCHBOARD_UPGRADE_FD": "3"})
	if code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	oneLine(t, stderr, "SWITCHBOARD_UPGRADE_FD", "--upgrade-fd is a command-line flag only")
	o, err := parseFlags(nil, []string{"SWITCHBOARD_UPGRADE_TIMEOUT=3s"}, io.Discard)
	if err != nil || o.upgradeTimeout != 3*time.Second {
		t.Fatalf("SWITCHBOARD_UPGRADE_TIMEOUT=3s: %v, %v", o, err)
	}
	if o, err := parseFlags(nil, nil, io.Discard); err != nil || o.upgradeTimeout != defaultUpgradeTimeout || o.upgradeFD != 0 {
		t.Fatalf("defaults: %v, %v", o, err)
	}
}

func TestFlagSyntaxErrorIsOneLine(t *testing.T) {
	for _, args := range [][]string{{"--no-such-flag"}, {"--max-connections"}, {"--heartbeat-interval", "often"}, {"-listen=:1", "extra"}} {
		code, stdout, stderr := runEnv(t, nil, args...)
		if code != 2 || stdout != "" {
			t.Errorf("%v: exit %d, stdout %q; want 2 and no usage", args, code, stdout)
		}
		oneLine(t, stderr)
	}
}

func TestMalformedListenAddressExits2(t *testing.T) {
	for _, args := range [][]string{
		{"--listen", "8080"},
		{"--listen", ":99999"},
		{"--listen", "localhost:http-ish"},
		{"--admin-listen", "127.0.0.1"},
	} {
		code, _, stderr := runEnv(t, nil, args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		oneLine(t, stderr, "invalid "+args[0])
	}
}

func TestRateLimitSourceFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--rate-limit-ipv6-prefix", "0"},
		{"--rate-limit-ipv6-prefix", "129"},
		{"--rate-limit-exempt", "10.0.0.0/33"},
		{"--rate-limit-exempt", "carrier-nat"},
		{"--rate-limit-exempt", "::ffff:10.0.0.0/104"},
	} {
		code, _, stderr := runEnv(t, nil, args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		oneLine(t, stderr, strings.TrimPrefix(args[0], "--"))
	}
	var errb bytes.Buffer
	o, err := parseFlags([]string{"--rate-limit-exempt", " 100.64.0.0/10, 2001:db8:5::/48,192.0.2.7 ", "--rate-limit-ipv6-prefix", "56"}, nil, &errb)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("2001:db8:5::/48"), netip.MustParsePrefix("192.0.2.7/32")}
	if len(o.cfg.RateLimitExempt) != len(want) || o.cfg.RateLimitIPv6Prefix != 56 {
		t.Fatalf("exempt %v, ipv6 prefix %d", o.cfg.RateLimitExempt, o.cfg.RateLimitIPv6Prefix)
	}
	for i := range want {
		if o.cfg.RateLimitExempt[i] != want[i] {
			t.Errorf("exempt[%d] = %v, want %v", i, o.cfg.RateLimitExempt[i], want[i])
		}
	}
	if err := o.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	many := strings.Repeat("10.0.0.0/8,", 1025)
	if code, _, stderr := runEnv(t, map[string]string{"SWITCHBOARD_RATE_LIMIT_EXEMPT": many}); code != 2 {
		t.Errorf("1025 exempt prefixes: exit %d, want 2", code)
	} else {
		oneLine(t, stderr, "at most 1024")
	}
}

// systemdEnvironmentFile reads an EnvironmentFile= as systemd does: one
// KEY=VALUE per line, lines starting with # or ; are comments, and
// everything after the = is the value, an inline "# …" included.
func systemdEnvironmentFile(t *testing.T, text string) []string {
	t.Helper()
	var env []string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("environment file line %q has no =", line)
		}
		env = append(env, strings.TrimSpace(k)+"="+strings.Trim(strings.TrimSpace(v), `"`))
	}
	return env
}

// The shipped environment file starts the relay as it is, and with every
// commented-out example uncommented: systemd keeps an inline comment as
// part of the value, so an example with one would break start-up.
func TestShippedEnvironmentFileParses(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/switchboard.env")
	if err != nil {
		t.Fatal(err)
	}
	var uncommented strings.Builder
	examples := 0
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "#"+envPrefix); ok {
			line = envPrefix + rest
			examples++
		}
		uncommented.WriteString(line + "\n")
	}
	if examples < 4 {
		t.Fatalf("found %d commented-out examples in deploy/switchboard.env; the test reads them as #SWITCHBOARD_…=", examples)
	}
	for name, text := range map[string]string{"as shipped": string(raw), "examples uncommented": uncommented.String()} {
		env := systemdEnvironmentFile(t, text)
		var errb bytes.Buffer
		o, err := parseFlags(nil, env, &errb)
		if err == nil {
			err = o.cfg.Validate()
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		for _, kv := range env {
			if strings.Contains(kv, "#") {
				t.Errorf("%s: %q carries a comment into its value", name, kv)
			}
		}
	}
}
