package main

// promtool checks of deploy/prometheus: the rules parse, their unit tests
// pass, the example scrape configuration loads, and every dashboard query
// is valid PromQL. .ci/run extracts promtool from Debian's prometheus
// package; without it these tests skip.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// promtoolTimeout bounds one promtool run; the unit tests take about a
// second.
const promtoolTimeout = 60 * time.Second

func promtoolPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not on PATH: .ci/run extracts it from Debian's prometheus package " +
			"(apt-get download prometheus && dpkg -x); without it deploy/prometheus is not checked")
	}
	return p
}

// promtool runs promtool with args in dir and fails the test with its
// output if it exits non-zero.
func promtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), promtoolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtoolPath(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, out)
	}
}

func TestPromtoolChecksRules(t *testing.T) {
	promtool(t, deployDir+"/prometheus", "check", "rules", "rules.yml")
}

func TestPromtoolRunsRuleUnitTests(t *testing.T) {
	promtool(t, deployDir+"/prometheus", "test", "rules", "rules_test.yml")
}

// The example loads as it would be installed: rules.yml next to it under
// the name it gives in rule_files, so promtool checks the rules it loads.
func TestPromtoolChecksScrapeConfig(t *testing.T) {
	promtoolPath(t)
	dir := t.TempDir()
	for src, dst := range map[string]string{scrapeFile: "prometheus.yml", rulesFile: "switchboard-rules.yml"} {
		if err := os.WriteFile(filepath.Join(dir, dst), []byte(readFile(t, src)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	promtool(t, dir, "check", "config", "prometheus.yml")
}

// dashboardVars stand in for Grafana's variables so that promtool can parse
// the queries.
var dashboardVars = strings.NewReplacer(
	"$__rate_interval", "5m",
	"$haproxy_instance", ".*",
	"$haproxy_job", ".*",
	"$instance", ".*",
	"$job", ".*",
)

// TestPromtoolParsesDashboardQueries: each query becomes a recording rule
// in a scratch file that `promtool check rules` parses.
func TestPromtoolParsesDashboardQueries(t *testing.T) {
	promtoolPath(t)
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, expr := range dashboardExprs(t) {
		q, _ := json.Marshal(dashboardVars.Replace(expr)) // a JSON string is a YAML scalar
		fmt.Fprintf(&b, "      - record: dashboard:query_%d:check\n        expr: %s\n", i, q)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.yml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, dir, "check", "rules", "dashboard.yml")
}
