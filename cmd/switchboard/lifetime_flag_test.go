package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

func TestBinaryMaxLifetimeFlag(t *testing.T) {
	var errb bytes.Buffer
	o, err := parseFlags(nil, os.Environ(), &errb)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.BinaryMaxLifetime != 0 {
		t.Fatalf("default lifetime %s, want 0 (off)", o.cfg.BinaryMaxLifetime)
	}

	t.Setenv("SWITCHBOARD_BINARY_MAX_LIFETIME", "90m")
	if o, err = parseFlags(nil, os.Environ(), &errb); err != nil || o.cfg.BinaryMaxLifetime != 90*time.Minute {
		t.Fatalf("from the environment: %v %v, want 1h30m", o, err)
	}
	if err := o.cfg.Validate(); err != nil {
		t.Fatalf("90m does not validate: %v", err)
	}
	if o, err = parseFlags([]string{"--binary-max-lifetime", "1s"}, os.Environ(), &errb); err != nil || o.cfg.BinaryMaxLifetime != time.Second {
		t.Fatalf("flag over environment: %v %v, want 1s", o, err)
	}

	for _, v := range []string{"-1s", "500ms", "999ms"} {
		var out, errb bytes.Buffer
		code := run([]string{"--binary-max-lifetime", v}, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), "binary-max-lifetime") {
			t.Errorf("--binary-max-lifetime %s: exit %d, stderr %q; want 2 naming the flag", v, code, errb.String())
		}
	}
}
