package main

import (
	"bytes"
	"io"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"switchboard/loop"
)

// The process_* and go_* families are the ones operators' standard
// dashboards (node and Go process dashboards) are built on. The library
// writes # HELP and # TYPE lines only when asked to, and strict scrapers
// (and our own tests) want them, so they are switched on for the process.
func init() { metrics.ExposeMetadata(true) }

// writeAdminMetrics writes everything /metrics serves: the relay's own
// families, the build, then the process and Go runtime families. No two
// parts share a family name (the relay's are all pyrycode_relay_* or
// switchboard_*, the library's process_* and go_*), which a test checks.
func writeAdminMetrics(w *bytes.Buffer, srv *loop.Server) error {
	if err := srv.WriteMetrics(w); err != nil {
		return err
	}
	writeBuildInfo(w, version, runtime.Version())
	writeUpgrades(w)
	metrics.WriteProcessMetrics(w)
	// process_open_fds and process_max_fds are written apart by the library
	// because counting /proc/self/fd costs a directory read per scrape: with
	// 20,000 connections about a millisecond, against a scrape every 15 s
	// or more, and the descriptor headroom is what a relay runs out of.
	metrics.WriteFDMetrics(w)
	return nil
}

// writeBuildInfo writes the conventional *_build_info gauge: always 1, the
// build in its labels, so a dashboard can join on it or show a version
// change across a fleet.
func writeBuildInfo(w io.Writer, version, goVersion string) {
	_, _ = io.WriteString(w, "# HELP switchboard_build_info The running build: always 1, its version and Go version in the labels.\n"+
		"# TYPE switchboard_build_info gauge\n"+
		`switchboard_build_info{version="`+labelValue(version)+`",goversion="`+labelValue(goVersion)+`"} 1`+"\n")
}

// labelValue escapes a label value as the Prometheus text format wants:
// the version comes from -ldflags and may hold anything.
var labelValue = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace

// writeUpgrades writes the live-upgrade families: switchboard_upgrades_total
// by outcome (their sum the attempts), the connections handed over and the
// last upgrade's pause. A successor carries the totals on from the process
// it took over from (handover.go), so they do not reset at every release.
func writeUpgrades(w io.Writer) {
	c := &upgradeCounts
	_, _ = io.WriteString(w, "# HELP switchboard_upgrades_total Live upgrades (SIGUSR2) by outcome: succeeded (a successor serves the listeners and connections) or rolled_back (this process kept serving).\n"+
		"# TYPE switchboard_upgrades_total counter\n"+
		`switchboard_upgrades_total{outcome="succeeded"} `+strconv.FormatInt(c.succeeded.Load(), 10)+"\n"+
		`switchboard_upgrades_total{outcome="rolled_back"} `+strconv.FormatInt(c.rolledBack.Load(), 10)+"\n"+
		"# HELP switchboard_upgrade_connections_handed_total Established connections a successor adopted from its predecessor, over every upgrade so far.\n"+
		"# TYPE switchboard_upgrade_connections_handed_total counter\n"+
		"switchboard_upgrade_connections_handed_total "+strconv.FormatInt(c.handed.Load(), 10)+"\n"+
		"# HELP switchboard_upgrade_pause_seconds The upgrade that started this process: from the predecessor's last connection stopping reading to this process reading them all (0: not started by an upgrade).\n"+
		"# TYPE switchboard_upgrade_pause_seconds gauge\n"+
		"switchboard_upgrade_pause_seconds "+strconv.FormatFloat(time.Duration(c.pauseNs.Load()).Seconds(), 'g', -1, 64)+"\n")
}
