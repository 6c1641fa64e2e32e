package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// parentSlack is how much longer than --timeout the parent waits for its
// workers' results before it kills them.
const parentSlack = 20 * time.Second

// Run performs one run as configured: in this process when Procs is 1,
// else across Procs re-executed worker processes. It prints progress on
// stderr and the summary plus the SWLOAD_RESULT line on stdout. The error
// is only for an unusable configuration or workers that cannot start; what
// went wrong during the run is in the Result.
func Run(ctx context.Context, cfg Config, stdout, stderr io.Writer) (*Result, error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Insecure {
		fmt.Fprintln(stderr, insecureWarning)
	}
	var res *Result
	if cfg.Mode == modeFlood {
		rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		res = runFlood(rctx, cfg, stderr)
		cancel()
	} else if cfg.Procs == 1 {
		rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		res = runLocal(rctx, cfg, stderr)
		cancel()
	} else {
		var err error
		rctx, cancel := context.WithTimeout(ctx, cfg.Timeout+parentSlack)
		res, err = runParent(rctx, cfg, stderr)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	res.Interrupted = res.Interrupted || ctx.Err() != nil
	res.CPUUserS, res.CPUSysS = cpuTimes(true)
	writeReport(stdout, res)
	return res, nil
}

// everyTick calls f every d until the returned stop is called; a d of zero
// or less (--progress 0) never calls it.
func everyTick(d time.Duration, f func()) (stop func()) {
	if d <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				f()
			case <-done:
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// runLocal runs the whole load in this process.
func runLocal(ctx context.Context, cfg Config, stderr io.Writer) *Result {
	e := newEngine(cfg, shareOf(&cfg, 0))
	pp := newProgressPrinter(stderr)
	pp.showSends = cfg.Rate > 0
	stop := everyTick(cfg.Progress, func() { pp.print(e.snapshot()) })
	res := e.run(ctx, func(context.Context) {})
	stop()
	return res
}

// workerMsg is one JSON line from a worker.
type workerMsg struct {
	Type   string  `json:"type"` // progress | ready | result
	Result *Result `json:"result,omitempty"`
	progress
}

// runWorker is a child process: it drives its share and talks to the
// parent in JSON lines on stdout (progress every interval, "ready" after
// its connect phase, one "result" at the end). It opens its window when the
// parent writes "go" on stdin; stdin closing means the parent is gone.
func runWorker(ctx context.Context, cfg Config, stdin io.Reader, stdout io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var mu sync.Mutex
	enc := json.NewEncoder(stdout)
	emit := func(v any) {
		mu.Lock()
		_ = enc.Encode(v)
		mu.Unlock()
	}
	goCh := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdin)
		released := false
		for sc.Scan() {
			if sc.Text() == "go" && !released {
				released = true
				close(goCh)
			}
		}
		cancel() // the parent is gone: end the run gracefully
	}()
	e := newEngine(cfg, shareOf(&cfg, cfg.WorkerIndex))
	stop := everyTick(cfg.Progress, func() { emit(e.snapshot()) })
	res := e.run(ctx, func(ctx context.Context) {
		emit(workerMsg{Type: "ready"})
		select {
		case <-goCh:
		case <-ctx.Done():
		}
	})
	stop()
	res.Procs = 1
	emit(workerMsg{Type: "result", Result: res})
	return 0
}

// phaseOrder ranks phases so the parent can show the least advanced one.
var phaseOrder = map[string]int{"start": 0, "connect": 1, "ready": 2, "hold": 3, "run": 3, "churn": 3, "drain": 4, "close": 5, "done": 6}

type workerProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	prog   progress
	fresh  bool // a progress sample arrived since the last line
	ready  bool
	done   bool
	result *Result
}

// runParent starts cfg.Procs workers, relays the barrier, prints the merged
// progress and merges their results.
func runParent(ctx context.Context, cfg Config, stderr io.Writer) (*Result, error) {
	exe := cfg.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("finding own executable for workers: %w", err)
		}
	}
	type msg struct {
		w    int
		line []byte
		done bool
		err  error
	}
	// Workers' stderr is copied by exec's goroutines while this loop prints
	// progress: serialize the two.
	stderr = &syncWriter{w: stderr}
	msgs := make(chan msg, 256)
	ws := make([]*workerProc, cfg.Procs)
	remaining := 0
	for i := range ws {
		cmd := exec.Command(exe, workerArgs(&cfg, i)...)
		cmd.Stderr = stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			for _, w := range ws[:i] {
				_ = w.cmd.Process.Kill()
			}
			return nil, fmt.Errorf("starting worker %d: %w", i, err)
		}
		ws[i] = &workerProc{cmd: cmd, stdin: stdin}
		remaining++
		go func() {
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 64<<10), 64<<20)
			for sc.Scan() {
				msgs <- msg{w: i, line: append([]byte(nil), sc.Bytes()...)}
			}
			msgs <- msg{w: i, done: true, err: cmd.Wait()}
		}()
	}

	// A progress line is printed once every live worker has sent a sample
	// since the last one (their clocks are not aligned with ours), or when
	// one is late by a whole interval.
	pp := newProgressPrinter(stderr)
	pp.showSends = cfg.Rate > 0
	printProgress := func() {
		var sum progress
		sum.Phase = "done"
		for _, w := range ws {
			sum.add(w.prog)
			w.fresh = false
			if !w.done && phaseOrder[w.prog.Phase] < phaseOrder[sum.Phase] {
				sum.Phase = w.prog.Phase
			}
		}
		pp.print(sum)
	}
	quiet := cfg.Progress <= 0 // --progress 0: no progress lines
	var tickC <-chan time.Time
	if !quiet {
		tick := time.NewTicker(cfg.Progress)
		defer tick.Stop()
		tickC = tick.C
	}
	ctxDone := ctx.Done()
	var killAt <-chan time.Time
	released := false
	for remaining > 0 {
		if !released {
			all := true
			for _, w := range ws {
				all = all && (w.ready || w.done)
			}
			if all {
				released = true
				for _, w := range ws {
					if !w.done {
						_, _ = io.WriteString(w.stdin, "go\n")
					}
				}
			}
		}
		select {
		case m := <-msgs:
			w := ws[m.w]
			if m.done {
				w.done = true
				remaining--
				if w.result == nil {
					fmt.Fprintf(stderr, "swload: worker %d ended without a result: %v\n", m.w, m.err)
				}
				continue
			}
			var wm workerMsg
			if err := json.Unmarshal(m.line, &wm); err != nil {
				fmt.Fprintf(stderr, "swload: worker %d: %s\n", m.w, m.line)
				continue
			}
			switch wm.Type {
			case "progress":
				w.prog = wm.progress
				w.fresh = true
				all := true
				for _, o := range ws {
					all = all && (o.fresh || o.done)
				}
				if all && !quiet {
					printProgress()
				}
			case "ready":
				w.ready = true
			case "result":
				w.result = wm.Result
			}
		case <-tickC:
			if time.Since(pp.last) > 2*cfg.Progress-cfg.Progress/4 {
				printProgress()
			}
		case <-ctxDone:
			// Interrupted or past the deadline: ask every worker to wind
			// down (they drain and report), then insist.
			ctxDone = nil
			for _, w := range ws {
				if !w.done {
					_ = w.cmd.Process.Signal(os.Interrupt)
				}
			}
			killAt = time.After(3*cfg.Drain + 10*time.Second)
		case <-killAt:
			killAt = nil
			for _, w := range ws {
				if !w.done {
					_ = w.cmd.Process.Kill()
				}
			}
		}
	}

	res := &Result{Mode: cfg.Mode, Addr: cfg.target(), Inflight: cfg.Inflight, Size: cfg.Size, RateTarget: cfg.Rate}
	for _, w := range ws {
		if w.result == nil {
			res.WorkerFailures++
			continue
		}
		res.merge(w.result)
	}
	res.Interrupted = res.Interrupted || ctx.Err() == context.Canceled
	res.TimedOut = res.TimedOut || ctx.Err() == context.DeadlineExceeded
	return res, nil
}

// syncWriter makes one writer safe for several goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
