package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A bad FCM key stops the relay at start (exit 2) with one line that never
// quotes the key.
func TestFCMCredentialsRefusedAtStart(t *testing.T) {
	const marker = "SECRET-KEY-MATERIAL"
	path := filepath.Join(t.TempDir(), "key.json")
	bad := `{"type":"service_account","project_id":"p","client_email":"e@p","private_key":"` + marker + `"}`
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	check := func(name string, args []string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(append(args, "--listen", "127.0.0.1:0", "--admin-listen", ""), &out, &errb)
		msg := errb.String()
		if code != 2 || strings.Contains(msg, marker) || strings.Count(msg, "\n") != 1 {
			t.Errorf("%s: exit %d, stderr %q; want 2, one line, no key material", name, code, msg)
		}
	}
	check("flag", []string{"--fcm-credentials-file", path})
	check("missing file", []string{"--fcm-credentials-file", filepath.Join(t.TempDir(), "nope.json")})
	t.Setenv("SWITCHBOARD_FCM_CREDENTIALS_FILE", path)
	check("file from env", nil)
	t.Setenv("SWITCHBOARD_FCM_CREDENTIALS_FILE", "")
	t.Setenv("SWITCHBOARD_FCM_CREDENTIALS_JSON", bad)
	check("JSON from env", nil)
	check("both", []string{"--fcm-credentials-file", path})
}

func TestFCMFlagDefaults(t *testing.T) {
	o, err := parseFlags(nil, os.Environ(), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.fcmCreds != "" || o.fcmURL != "https://fcm.googleapis.com" || o.fcmToken != "" {
		t.Fatalf("defaults: %q %q %q", o.fcmCreds, o.fcmURL, o.fcmToken)
	}
	if c, err := loadFCMCredentials(""); c != nil || err != nil {
		t.Fatalf("no credentials: %v %v, want push off", c, err)
	}
}
