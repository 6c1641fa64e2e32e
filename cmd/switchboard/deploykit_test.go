package main

// The monitoring kit in deploy/ (Prometheus rules, their promtool tests, the
// Grafana dashboard) refers to metrics by name. These tests keep those names
// honest against what the relay serves, without any tool installed: a rule
// or panel on a renamed or misspelt metric would otherwise sit silent until
// the day it was needed. promtool_test.go and haproxy_config_test.go run the
// tools themselves where they are installed.

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"switchboard/loop"
)

const (
	deployDir     = "../../deploy"
	rulesFile     = deployDir + "/prometheus/rules.yml"
	rulesTestFile = deployDir + "/prometheus/rules_test.yml"
	scrapeFile    = deployDir + "/prometheus/scrape.yml"
	dashboardFile = deployDir + "/grafana/switchboard.json"
)

// relayMetricPrefixes are the prefixes of names the relay's /metrics serves;
// haproxy_ names come from HAProxy's exporter (haproxy_config_test.go).
var relayMetricPrefixes = []string{"pyrycode_relay_", "switchboard_", "process_", "go_"}

// identifier matches PromQL identifiers, recording-rule names (with colons)
// included, so that one name is never split into two.
var identifier = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)

// dashboardVar matches a Grafana variable reference ($job, ${datasource}),
// which is not a metric whatever it is called.
var dashboardVar = regexp.MustCompile(`\$\{?\w+\}?`)

// metricRefs returns the metric names in text that start with one of
// prefixes, and the recording-rule names (level:metric:operation).
func metricRefs(text string, prefixes []string) (metrics, recorded map[string]bool) {
	metrics, recorded = map[string]bool{}, map[string]bool{}
	for _, id := range identifier.FindAllString(dashboardVar.ReplaceAllString(text, ""), -1) {
		if strings.Count(id, ":") == 2 && !strings.HasPrefix(id, ":") {
			recorded[id] = true
			continue
		}
		if strings.Contains(id, ":") {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(id, p) {
				metrics[id] = true
			}
		}
	}
	return metrics, recorded
}

// seriesNames returns every sample name in a Prometheus text exposition.
func seriesNames(exposition string) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(exposition, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

// relayMetrics is what the admin listener's /metrics serves for a relay
// with the default configuration.
func relayMetrics(t *testing.T) map[string]bool {
	t.Helper()
	srv, err := loop.New(loop.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	a, err := loadAdmin(adminConfig{})
	if err != nil {
		t.Fatal(err)
	}
	a.handler(srv).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: status %d", rec.Code)
	}
	names := seriesNames(rec.Body.String())
	if !names["switchboard_live_connections"] {
		t.Fatalf("/metrics lacks switchboard_live_connections:\n%s", rec.Body.String())
	}
	return names
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// yamlComments strips comment lines, which may name things that are not
// metrics (file names, flags).
func yamlComments(text string) string {
	var b strings.Builder
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

var recordRule = regexp.MustCompile(`(?m)^\s*- record:\s*(\S+)\s*$`)

// recordedNames are the series rules.yml records.
func recordedNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, m := range recordRule.FindAllStringSubmatch(readFile(t, rulesFile), -1) {
		names[m[1]] = true
	}
	if len(names) == 0 {
		t.Fatalf("%s records nothing", rulesFile)
	}
	return names
}

// checkNames fails for every name in refs the relay does not serve and the
// allowlist does not excuse.
func checkNames(t *testing.T, file string, refs, served map[string]bool) {
	t.Helper()
	var missing []string
	for name := range refs {
		if !served[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	for _, name := range missing {
		t.Errorf("%s refers to %s, which the relay's /metrics does not serve", file, name)
	}
}

func TestRulesReferOnlyToServedMetrics(t *testing.T) {
	served := relayMetrics(t)
	refs, recorded := metricRefs(yamlComments(readFile(t, rulesFile)), relayMetricPrefixes)
	if len(refs) < 20 {
		t.Fatalf("found only %d metric names in %s: is the pattern still right?", len(refs), rulesFile)
	}
	checkNames(t, rulesFile, refs, served)
	defined := recordedNames(t)
	for name := range recorded {
		if !defined[name] {
			t.Errorf("%s uses %s, which no rule records", rulesFile, name)
		}
	}
}

// dashboard is the part of Grafana's JSON model these tests read.
type dashboard struct {
	Title      string
	Panels     []dashPanel
	Templating struct {
		List []struct {
			Name, Type string
			Query      any
			Definition string // a query variable's label_values(...)
		}
	}
}

type dashPanel struct {
	ID         int
	Type       string
	Title      string
	Datasource *struct{ Type, UID string }
	Targets    []struct {
		Expr       string
		RefID      string
		Datasource *struct{ Type, UID string }
	}
	Panels []dashPanel // a collapsed row's panels
}

// loadDashboard parses the dashboard and returns its panels, rows'
// children included, rows themselves left out.
func loadDashboard(t *testing.T) (dashboard, []dashPanel) {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal([]byte(readFile(t, dashboardFile)), &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var panels []dashPanel
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			panels = append(panels, p)
		}
	}
	walk(d.Panels)
	return d, panels
}

// datasourceVar is how every panel and query must name its data source, so
// that the dashboard imports into any Grafana whatever its Prometheus is
// called.
const datasourceVar = "${datasource}"

func TestDashboardParsesAndEveryPanelHasAQuery(t *testing.T) {
	d, panels := loadDashboard(t)
	if d.Title == "" || len(panels) < 20 {
		t.Fatalf("%s: title %q, %d panels", dashboardFile, d.Title, len(panels))
	}
	var hasVar bool
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus" {
			hasVar = true
		}
	}
	if !hasVar {
		t.Errorf("%s: no templating variable `datasource` of type datasource for prometheus", dashboardFile)
	}
	ids := map[int]bool{}
	for _, p := range panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Datasource == nil || p.Datasource.UID != datasourceVar {
			t.Errorf("panel %q: datasource %+v, want uid %s", p.Title, p.Datasource, datasourceVar)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if strings.TrimSpace(q.Expr) == "" || q.RefID == "" {
				t.Errorf("panel %q: a query without expr or refId", p.Title)
			}
			if q.Datasource == nil || q.Datasource.UID != datasourceVar {
				t.Errorf("panel %q query %s: datasource %+v, want uid %s", p.Title, q.RefID, q.Datasource, datasourceVar)
			}
		}
	}
}

// dashboardExprs returns every query of the dashboard.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	_, panels := loadDashboard(t)
	var exprs []string
	for _, p := range panels {
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
		}
	}
	return exprs
}

// dashboardQueries is every query of the dashboard, its variables'
// included, as one text.
func dashboardQueries(t *testing.T) string {
	t.Helper()
	d, _ := loadDashboard(t)
	text := strings.Join(dashboardExprs(t), "\n")
	for _, v := range d.Templating.List {
		text += "\n" + v.Definition
	}
	return text
}

func TestDashboardRefersOnlyToServedMetrics(t *testing.T) {
	served := relayMetrics(t)
	refs, recorded := metricRefs(dashboardQueries(t), relayMetricPrefixes)
	if len(refs) < 20 {
		t.Fatalf("found only %d metric names in %s: is the pattern still right?", len(refs), dashboardFile)
	}
	checkNames(t, dashboardFile, refs, served)
	defined := recordedNames(t)
	for name := range recorded {
		if !defined[name] {
			t.Errorf("%s uses %s, which no rule in %s records", dashboardFile, name, rulesFile)
		}
	}
}

var (
	alertRule   = regexp.MustCompile(`(?m)^\s*- alert:\s*(\S+)\s*$`)
	testedAlert = regexp.MustCompile(`^\s*alertname:\s*(\S+)\s*$`)
	expAlerts   = regexp.MustCompile(`^\s*exp_alerts:\s*(\[\])?\s*$`)
)

// TestEveryAlertIsTestedBothWaysAndAnnotated: each alert in rules.yml has a
// promtool case where it fires and one where it does not, and tells the
// operator what to check and where to read about it.
func TestEveryAlertIsTestedBothWaysAndAnnotated(t *testing.T) {
	rules := readFile(t, rulesFile)
	locs := alertRule.FindAllStringSubmatchIndex(rules, -1)
	if len(locs) < 15 {
		t.Fatalf("%s: only %d alerts", rulesFile, len(locs))
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	var current string
	for _, line := range strings.Split(readFile(t, rulesTestFile), "\n") {
		if m := testedAlert.FindStringSubmatch(line); m != nil {
			current = m[1]
		} else if m := expAlerts.FindStringSubmatch(line); m != nil && current != "" {
			if m[1] == "" {
				fires[current] = true
			} else {
				quiet[current] = true
			}
			current = ""
		}
	}
	for i, loc := range locs {
		name := rules[loc[2]:loc[3]]
		end := len(rules)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		body := rules[loc[1]:end]
		if !fires[name] {
			t.Errorf("%s: no case in %s where it fires", name, rulesTestFile)
		}
		if !quiet[name] {
			t.Errorf("%s: no case in %s where it stays quiet", name, rulesTestFile)
		}
		for _, key := range []string{"severity:", "summary:", "description:", "runbook:"} {
			if !strings.Contains(body, key) {
				t.Errorf("%s: no %s", name, strings.TrimSuffix(key, ":"))
			}
		}
	}
}

var runbookRef = regexp.MustCompile(`runbook:\s*(docs/[\w.-]+\.md)#([\w-]+)`)

// TestRunbooksPointAtExistingSections: a runbook link to a renamed heading
// would send the operator nowhere in the middle of an incident.
func TestRunbooksPointAtExistingSections(t *testing.T) {
	refs := runbookRef.FindAllStringSubmatch(readFile(t, rulesFile), -1)
	if len(refs) == 0 {
		t.Fatalf("%s: no runbook links", rulesFile)
	}
	anchors := map[string]map[string]bool{}
	for _, r := range refs {
		doc, anchor := r[1], r[2]
		if anchors[doc] == nil {
			anchors[doc] = headingAnchors(readFile(t, filepath.Join("../..", doc)))
		}
		if !anchors[doc][anchor] {
			t.Errorf("runbook %s#%s: no such heading in %s", doc, anchor, doc)
		}
	}
}

var notAnchor = regexp.MustCompile(`[^a-z0-9 _-]`)

// headingAnchors returns the anchors GitHub gives a Markdown file's
// headings: lower case, punctuation dropped, spaces as dashes.
func headingAnchors(md string) map[string]bool {
	anchors := map[string]bool{}
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		h = notAnchor.ReplaceAllString(strings.ToLower(h), "")
		anchors[strings.ReplaceAll(h, " ", "-")] = true
	}
	return anchors
}
