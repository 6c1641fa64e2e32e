package relaytest

import (
	"bytes"
	"strings"
	"sync"
	"time"
)

// LogSink is an io.Writer that many goroutines (a relay's, or a process's
// output copiers) may write to while a test reads it. The zero value is
// ready.
type LogSink struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed by the next write; made by a waiter
}

func (s *LogSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return len(p), nil
}

// String is everything written so far.
func (s *LogSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// Tail is the last 20 lines, for failure messages.
func (s *LogSink) Tail() string {
	lines := strings.Split(strings.TrimSpace(s.String()), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

// Line returns the first complete line written so far that match accepts;
// a line still missing its newline is not looked at, since its writer has
// not finished it.
func (s *LogSink) Line(match func(string) bool) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	line, _, ok := s.lineLocked(match)
	return line, ok
}

func (s *LogSink) lineLocked(match func(string) bool) (string, <-chan struct{}, bool) {
	rest := s.buf.Bytes()
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		if l := string(rest[:i]); match(l) {
			return l, nil, true
		}
		rest = rest[i+1:]
	}
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return "", s.changed, false
}

// WaitLine waits for a line that match accepts, as Line finds them, for at
// most timeout; it gives up early once stop (which may be nil) is closed.
// match must not call the sink's other methods: it runs under its lock.
func (s *LogSink) WaitLine(stop <-chan struct{}, timeout time.Duration, match func(string) bool) (string, bool) {
	return s.WaitNth(stop, timeout, 1, match)
}

// WaitNth is WaitLine for the n-th line that match accepts.
func (s *LogSink) WaitNth(stop <-chan struct{}, timeout time.Duration, n int, match func(string) bool) (string, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	nth := func(l string) bool {
		if match(l) {
			seen++
		}
		return seen >= n
	}
	for {
		s.mu.Lock()
		seen = 0 // every look scans from the first line
		line, changed, ok := s.lineLocked(nth)
		s.mu.Unlock()
		if ok {
			return line, true
		}
		select {
		case <-changed:
		case <-stop:
			// What was written before the stop still counts.
			seen = 0
			return s.Line(nth)
		case <-deadline.C:
			return "", false
		}
	}
}
