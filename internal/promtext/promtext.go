// Package promtext is a strict reader of the Prometheus text exposition
// format (version 0.0.4), for tests that scrape the relay: it refuses what
// a Prometheus server would refuse or silently mangle (a malformed line, a
// family declared twice or split in two, a series repeated, a # TYPE after
// its samples, histogram buckets that are not cumulative), so a test that
// parses a scrape also proves the scrape is well formed.
package promtext

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Sample is one series' value.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Family is a metric family: its # TYPE (untyped when none was given) and
// its samples in the order they were written.
type Family struct {
	Name    string
	Type    string
	Help    string
	Samples []Sample

	helpSeen bool
}

// Parse reads a whole exposition. Families are keyed by name.
func Parse(text string) (map[string]*Family, error) {
	p := parser{fams: map[string]*Family{}, series: map[string]bool{}, done: map[string]bool{}}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if err := p.line(line); err != nil {
			return nil, fmt.Errorf("line %d %q: %v", i+1, line, err)
		}
	}
	for _, f := range p.fams {
		if f.Type == "histogram" {
			if err := checkHistogram(f); err != nil {
				return nil, err
			}
		}
	}
	return p.fams, nil
}

type parser struct {
	fams   map[string]*Family
	series map[string]bool // name{sorted labels} seen
	done   map[string]bool // families whose samples have ended
	cur    string          // family of the previous sample
}

var validTypes = map[string]bool{"counter": true, "gauge": true, "histogram": true, "summary": true, "untyped": true}

func (p *parser) line(line string) error {
	switch {
	case line == "":
		return fmt.Errorf("empty line")
	case strings.HasPrefix(line, "# HELP "), strings.HasPrefix(line, "# TYPE "):
		return p.meta(line)
	case strings.HasPrefix(line, "#"):
		return nil // a comment
	}
	return p.sample(line)
}

func (p *parser) meta(line string) error {
	kind := line[2:6]
	rest := line[7:]
	name, arg, _ := strings.Cut(rest, " ")
	if !validName(name) {
		return fmt.Errorf("bad metric name %q", name)
	}
	if p.done[name] || p.cur == name {
		return fmt.Errorf("%s for %s after its samples", kind, name)
	}
	f := p.family(name)
	switch kind {
	case "HELP":
		if f.helpSeen {
			return fmt.Errorf("second HELP for %s", name)
		}
		f.Help, f.helpSeen = arg, true
	case "TYPE":
		if f.Type != "" {
			return fmt.Errorf("second TYPE for %s", name)
		}
		if !validTypes[arg] {
			return fmt.Errorf("unknown type %q", arg)
		}
		f.Type = arg
	}
	return nil
}

func (p *parser) family(name string) *Family {
	f, ok := p.fams[name]
	if !ok {
		f = &Family{Name: name}
		p.fams[name] = f
	}
	return f
}

func (p *parser) sample(line string) error {
	s, err := parseSample(line)
	if err != nil {
		return err
	}
	fam := p.familyOf(s.Name)
	if fam != p.cur {
		if p.done[fam] {
			return fmt.Errorf("family %s appears twice", fam)
		}
		if p.cur != "" {
			p.done[p.cur] = true
		}
		p.cur = fam
	}
	key := seriesKey(s)
	if p.series[key] {
		return fmt.Errorf("series %s repeated", key)
	}
	p.series[key] = true
	f := p.family(fam)
	if f.Type == "" {
		f.Type = "untyped"
	}
	f.Samples = append(f.Samples, s)
	return nil
}

// familyOf maps a sample name to its family: a histogram's or summary's
// _bucket, _sum and _count samples belong to the declared base name.
func (p *parser) familyOf(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if f, ok := p.fams[base]; ok && (f.Type == "histogram" || f.Type == "summary") {
			if suffix == "_bucket" && f.Type != "histogram" {
				break
			}
			return base
		}
	}
	return name
}

func parseSample(line string) (Sample, error) {
	s := Sample{Labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return s, fmt.Errorf("no value")
	}
	s.Name = line[:i]
	if !validName(s.Name) {
		return s, fmt.Errorf("bad metric name %q", s.Name)
	}
	rest := line[i:]
	if rest[0] == '{' {
		var err error
		if rest, err = parseLabels(rest[1:], s.Labels); err != nil {
			return s, err
		}
	}
	fields := strings.Fields(rest)
	if len(fields) < 1 || len(fields) > 2 || rest[0] != ' ' {
		return s, fmt.Errorf("want ' value [timestamp]' after the name and labels")
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, fmt.Errorf("bad value %q", fields[0])
	}
	if len(fields) == 2 {
		if _, err := strconv.ParseInt(fields[1], 10, 64); err != nil {
			return s, fmt.Errorf("bad timestamp %q", fields[1])
		}
	}
	s.Value = v
	return s, nil
}

// parseLabels reads name="value" pairs up to '}' and returns what follows.
func parseLabels(in string, into map[string]string) (string, error) {
	for {
		in = strings.TrimLeft(in, " \t")
		if strings.HasPrefix(in, "}") {
			return in[1:], nil
		}
		eq := strings.IndexByte(in, '=')
		if eq < 0 {
			return "", fmt.Errorf("label without '='")
		}
		name := strings.TrimRight(in[:eq], " \t")
		if !validLabelName(name) {
			return "", fmt.Errorf("bad label name %q", name)
		}
		if _, dup := into[name]; dup {
			return "", fmt.Errorf("label %s twice", name)
		}
		in = strings.TrimLeft(in[eq+1:], " \t")
		if !strings.HasPrefix(in, `"`) {
			return "", fmt.Errorf("label %s: value not quoted", name)
		}
		var val strings.Builder
		j := 1
		for ; j < len(in) && in[j] != '"'; j++ {
			if in[j] == '\\' {
				j++
				if j == len(in) {
					break
				}
				switch in[j] {
				case '\\', '"':
					val.WriteByte(in[j])
				case 'n':
					val.WriteByte('\n')
				default:
					return "", fmt.Errorf("label %s: bad escape \\%c", name, in[j])
				}
				continue
			}
			val.WriteByte(in[j])
		}
		if j >= len(in) {
			return "", fmt.Errorf("label %s: unterminated value", name)
		}
		into[name] = val.String()
		in = strings.TrimLeft(in[j+1:], " \t")
		switch {
		case strings.HasPrefix(in, ","):
			in = in[1:]
		case strings.HasPrefix(in, "}"):
		default:
			return "", fmt.Errorf("after label %s: want ',' or '}'", name)
		}
	}
}

// checkHistogram requires every series of f to have cumulative buckets in
// ascending le order ending at +Inf, and its _count (when written) to
// equal the +Inf bucket.
func checkHistogram(f *Family) error {
	type series struct {
		les            []float64
		counts         []float64
		count          float64
		hasCount, seen bool
	}
	byLabels := map[string]*series{}
	get := func(s Sample) *series {
		rest := map[string]string{}
		for k, v := range s.Labels {
			if k != "le" {
				rest[k] = v
			}
		}
		key := seriesKey(Sample{Labels: rest})
		if byLabels[key] == nil {
			byLabels[key] = &series{}
		}
		return byLabels[key]
	}
	for _, s := range f.Samples {
		h := get(s)
		switch s.Name {
		case f.Name + "_bucket":
			le, ok := s.Labels["le"]
			if !ok {
				return fmt.Errorf("%s: bucket without le", f.Name)
			}
			v, err := strconv.ParseFloat(le, 64)
			if err != nil {
				return fmt.Errorf("%s: bad le %q", f.Name, le)
			}
			if n := len(h.les); n > 0 && (v <= h.les[n-1] || s.Value < h.counts[n-1]) {
				return fmt.Errorf("%s: bucket le=%q out of order or not cumulative", f.Name, le)
			}
			h.les, h.counts = append(h.les, v), append(h.counts, s.Value)
		case f.Name + "_count":
			h.count, h.hasCount = s.Value, true
		case f.Name + "_sum":
		default:
			return fmt.Errorf("%s: sample %s does not belong to a histogram", f.Name, s.Name)
		}
	}
	for key, h := range byLabels {
		n := len(h.les)
		if n == 0 || !math.IsInf(h.les[n-1], 1) {
			return fmt.Errorf("%s%s: no +Inf bucket", f.Name, key)
		}
		if h.hasCount && h.count != h.counts[n-1] {
			return fmt.Errorf("%s%s: _count %v but +Inf bucket %v", f.Name, key, h.count, h.counts[n-1])
		}
	}
	return nil
}

func seriesKey(s Sample) string {
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(s.Name)
	b.WriteByte('{')
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q,", k, s.Labels[k])
	}
	b.WriteByte('}')
	return b.String()
}

func validName(n string) bool {
	for i, c := range n {
		if !(c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return n != ""
}

func validLabelName(n string) bool { return validName(n) && !strings.Contains(n, ":") }

// Value returns the value of the series of name with exactly labels
// (nil: none), and whether there is one.
func Value(fams map[string]*Family, family, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[family]
	if !ok {
		return 0, false
	}
	want := seriesKey(Sample{Name: name, Labels: labels})
	for _, s := range f.Samples {
		if seriesKey(s) == want {
			return s.Value, true
		}
	}
	return 0, false
}
