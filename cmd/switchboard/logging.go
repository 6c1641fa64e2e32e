package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
)

// newLogger builds the relay's logger. Both formats escape what clients
// control: the text handler quotes values with spaces, quotes or control
// bytes, the JSON handler escapes them. Which keys the relay logs is a
// closed set, listed in docs/operations.md; none carries a token, a header
// set or a frame payload. A key has the same type in both formats: the
// JSON handler alone would write durations as integer nanoseconds, so
// every duration is written as text ("1.5s"), as the text handler does.
func newLogger(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationsAsText}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("invalid log-format %q: want text or json", format)
}

// durationsAsText writes a duration as time.Duration.String does.
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// capNetBindService is the one capability a production relay may hold.
const capNetBindService = 10

// checkPrivileges refuses root and any effective capability other than
// CAP_NET_BIND_SERVICE: the relay parses untrusted input all day and needs
// nothing more.
func checkPrivileges() error {
	if os.Geteuid() == 0 {
		return fmt.Errorf("--production: refusing to run as root (run as a dedicated user; see deploy/)")
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return fmt.Errorf("--production: cannot read capabilities: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		hexCaps, ok := strings.CutPrefix(line, "CapEff:")
		if !ok {
			continue
		}
		caps, err := strconv.ParseUint(strings.TrimSpace(hexCaps), 16, 64)
		if err != nil {
			return fmt.Errorf("--production: cannot parse CapEff: %v", err)
		}
		if extra := caps &^ (1 << capNetBindService); extra != 0 {
			return fmt.Errorf("--production: refusing to run with capabilities %#x beyond CAP_NET_BIND_SERVICE", extra)
		}
	}
	return nil
}
