package promtext

import (
	"strings"
	"testing"
)

func TestParseAcceptsAWellFormedExposition(t *testing.T) {
	text := `# HELP a_total Things.
# TYPE a_total counter
a_total{kind="x"} 3
a_total{kind="y\"q"} 4
# TYPE h_seconds histogram
h_seconds_bucket{le="0.1"} 1
h_seconds_bucket{le="+Inf"} 2
h_seconds_sum 0.3
h_seconds_count 2
g 1.5 1700000000000
`
	fams, err := Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	if fams["a_total"].Type != "counter" || fams["h_seconds"].Type != "histogram" || fams["g"].Type != "untyped" {
		t.Fatalf("types: %+v", fams)
	}
	if v, ok := Value(fams, "a_total", "a_total", map[string]string{"kind": `y"q`}); !ok || v != 4 {
		t.Fatalf("a_total{kind=y\"q} = %v, %v", v, ok)
	}
}

func TestParseRefusesWhatAScraperWouldNot(t *testing.T) {
	for name, text := range map[string]string{
		"type twice":          "# TYPE a gauge\n# TYPE a gauge\na 1\n",
		"family split":        "a 1\nb 1\na{x=\"1\"} 2\n",
		"series repeated":     "a{x=\"1\"} 1\na{x=\"1\"} 2\n",
		"type after samples":  "a 1\n# TYPE a gauge\n",
		"unknown type":        "# TYPE a meter\na 1\n",
		"bad value":           "a one\n",
		"unquoted label":      "a{x=1} 1\n",
		"bad name":            "1a 1\n",
		"buckets not cumul.":  "# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"+Inf\"} 4\n",
		"no +Inf bucket":      "# TYPE h histogram\nh_bucket{le=\"1\"} 5\n",
		"count is not +Inf":   "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 5\nh_count 4\n",
		"empty line":          "a 1\n\nb 1\n",
		"unterminated labels": "a{x=\"1\" 1\n",
	} {
		if _, err := Parse(text); err == nil {
			t.Errorf("%s: accepted %q", name, strings.TrimSpace(text))
		}
	}
}
