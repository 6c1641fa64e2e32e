package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"switchboard/internal/relaytest"
	"switchboard/loop"
)

// The SIGTERM and scale-out tests run the built command; relaytest builds
// it once for both and removes it after.
func TestMain(m *testing.M) { relaytest.Main(m) }

func TestBadFlagValuesExit2WithOneLine(t *testing.T) {
	cases := [][]string{
		{"--max-connections", "0"},
		{"--phones-per-server", "-1"},
		{"--max-message-bytes", "12"},
		{"--phone-outbox-bytes", "1000"},
		{"--write-timeout", "soon"},
		{"--read-workers", "5000"},
		{"--read-queue-depth", "-1"},
		{"--read-stall-after", "2s"},
		{"--log-level", "loud"},
		{"--upgrade-timeout", "0s"},
		{"--upgrade-timeout", "-1s"},
		{"--upgrade-fd", "-1"},
		{"--upgrade-fd", "2"},
		{"--no-such-flag"},
		{"stray-argument"},
	}
	for _, args := range cases {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, errb.String())
			continue
		}
		if !strings.HasPrefix(errb.String(), "switchboard: ") || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%v: stderr %q is not one line naming the reason", args, errb.String())
		}
	}
}

func TestEnvironmentSetsFlagsAndCommandLineWins(t *testing.T) {
	t.Setenv("SWITCHBOARD_PHONES_PER_SERVER", "3")
	t.Setenv("SWITCHBOARD_WRITE_TIMEOUT", "2s")
	t.Setenv("SWITCHBOARD_MAX_MESSAGE_BYTES", "1000")
	var errb bytes.Buffer
	o, err := parseFlags([]string{"--max-message-bytes", "2000"}, os.Environ(), &errb)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.PhonesPerServer != 3 || o.cfg.WriteTimeout != 2*time.Second {
		t.Errorf("environment not applied: %+v", o.cfg)
	}
	if o.cfg.MaxMessageBytes != 2000 {
		t.Errorf("flag should win over environment, got %d", o.cfg.MaxMessageBytes)
	}
}

func TestBadEnvironmentValueExits2(t *testing.T) {
	t.Setenv("SWITCHBOARD_MAX_CONNECTIONS", "lots")
	var out, errb bytes.Buffer
	if code := run(nil, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(errb.String(), "SWITCHBOARD_MAX_CONNECTIONS") || strings.Count(errb.String(), "\n") != 1 {
		t.Fatalf("want one line naming the variable, got %q", errb.String())
	}
}

func TestVersionAndHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "switchboard ") {
		t.Fatalf("--version: exit %d, out %q", code, out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"--help"}, &out, &errb); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, flag := range []string{"-listen", "-max-connections", "-phones-per-server", "-max-message-bytes", "-phone-outbox-bytes", "-version"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("--help does not mention %s", flag)
		}
	}
}

// Every flag --help lists has a row in docs/operations.md, where operators
// look up what happens at each bound.
func TestEveryFlagIsDocumented(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	flags := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(out.String(), -1)
	if len(flags) < 20 {
		t.Fatalf("found only %d flags in --help output", len(flags))
	}
	for _, f := range flags {
		if !bytes.Contains(doc, []byte("`--"+f[1])) {
			t.Errorf("--%s is not in docs/operations.md", f[1])
		}
	}
}

func TestAdminServesMetrics(t *testing.T) {
	relay, err := loop.New(loop.Config{})
	if err != nil {
		t.Fatal(err)
	}
	addr, stop, err := serveAdmin("127.0.0.1:0", relay, false)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !strings.Contains(string(body), "# TYPE pyrycode_relay_connected_phones gauge\npyrycode_relay_connected_phones 0\n") {
		t.Fatalf("metrics body:\n%s", body)
	}
	// pprof is off unless asked for.
	resp, err = http.Get("http://" + addr.String() + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("pprof without --pprof: status %d", resp.StatusCode)
	}
}

func TestProductionRefusesRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not running as root: nothing to refuse")
	}
	var out, errb bytes.Buffer
	if code := run([]string{"--production", "--admin-listen", "", "--listen", "127.0.0.1:0"}, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(errb.String(), "refusing to run as root") || strings.Count(errb.String(), "\n") != 1 {
		t.Fatalf("stderr %q", errb.String())
	}
}

func TestLogFormat(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--log-format", "xml"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "log-format") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	var buf bytes.Buffer
	log, err := newLogger(&buf, "json", 0)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("phone connected", "device", "a \"quoted\"\nname")
	if !strings.Contains(buf.String(), `"device":"a \"quoted\"\nname"`) {
		t.Fatalf("json log line %q does not escape the client's string", buf.String())
	}
}
