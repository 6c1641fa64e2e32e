package push_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"switchboard/internal/relaytest"
	"switchboard/push"
)

func TestWakeSent(t *testing.T) {
	tok := newTokenServer(t)
	fcm := newFCMServer(t, nil)
	w := newWaker(t, tok, fcm, nil, nil)
	wake(w, "srv-a", "device-1")
	wake(w, "srv-a", `dev"ice\2`) // JSON-escaped in the body
	waitCount(t, w, push.Sent, 2)
	fcm.checkRequests(t)
	got := fcm.received()
	if len(got) != 2 || !(got[0] == "device-1" || got[1] == "device-1") {
		t.Fatalf("FCM received %q", got)
	}
	if n := tok.hits.Load(); n != 1 {
		t.Fatalf("token endpoint hit %d times, want 1 (cached)", n)
	}
	for _, o := range []push.Outcome{push.Unregistered, push.SendFailed, push.TokenFetchFailed, push.Dropped} {
		if w.Count(o) != 0 {
			t.Fatalf("%s = %d", o, w.Count(o))
		}
	}
}

func TestWakeFCMAnswers(t *testing.T) {
	const fcmUnregistered = `{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`
	const detailsOnly = `{"error":{"code":400,"status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   push.Outcome
	}{
		{"404 FcmError UNREGISTERED", 404, fcmUnregistered, push.Unregistered},
		{"bare 404", 404, "", push.Unregistered},
		{"400 with UNREGISTERED detail", 400, detailsOnly, push.Unregistered},
		{"400 invalid argument", 400, `{"error":{"code":400,"status":"INVALID_ARGUMENT"}}`, push.SendFailed},
		{"500", 500, `{"error":{"code":500,"status":"INTERNAL"}}`, push.SendFailed},
		{"503 not JSON", 503, "unavailable", push.SendFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fcm := newFCMServer(t, func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			wk := newWaker(t, newTokenServer(t), fcm, nil, nil)
			wake(wk, "srv", "device-1")
			waitCount(t, wk, tc.want, 1)
			fcm.checkRequests(t)
			if wk.Count(push.Sent) != 0 {
				t.Fatal("counted as sent")
			}
		})
	}
}

func TestWakeTokenFetchFailed(t *testing.T) {
	tok := newTokenServer(t)
	tok.fail.Store(true)
	fcm := newFCMServer(t, nil)
	w := newWaker(t, tok, fcm, nil, nil)
	wake(w, "srv", "device-1")
	waitCount(t, w, push.TokenFetchFailed, 1)
	if got := fcm.received(); len(got) != 0 {
		t.Fatalf("FCM was called without a token: %q", got)
	}
	tok.fail.Store(false) // a failed fetch is not cached
	wake(w, "srv", "device-1")
	waitCount(t, w, push.Sent, 1)
}

func TestWakeAdmissionDrops(t *testing.T) {
	fcm := newFCMServer(t, nil)
	w := newWaker(t, newTokenServer(t), fcm, nil, nil)
	bad := []string{
		`{"platform":"apns","token":"device-1"}`,
		`{"platform":"fcm","token":""}`,
		`{"platform":"fcm"}`,
		`{"token":"device-1"}`,
		`{"platform":"FCM","token":"device-1"}`,
		`{"platform":"fcm","token":42}`,
		`{"platform":["fcm"],"token":"device-1"}`,
	}
	for _, b := range bad {
		w.Wake("srv", []byte(b))
	}
	if got := w.Count(push.Dropped); got != uint64(len(bad)) {
		t.Fatalf("dropped = %d, want %d", got, len(bad))
	}
	wake(w, "srv", "device-1") // the bucket was not spent on the bad ones
	waitCount(t, w, push.Sent, 1)
	if got := fcm.received(); len(got) != 1 {
		t.Fatalf("FCM received %q", got)
	}
}

func TestWakePerServerBucket(t *testing.T) {
	const interval = 300 * time.Millisecond
	fcm := newFCMServer(t, nil)
	w := newWaker(t, newTokenServer(t), fcm, nil, func(c *push.Config) { c.Interval = interval })
	start := time.Now()
	for range 7 {
		wake(w, "srv-a", "device-a")
	}
	wake(w, "srv-b", "device-b") // another server-id has its own bucket
	if time.Since(start) >= interval {
		t.Skip("machine too slow for this interval")
	}
	if got := w.Count(push.Dropped); got != 1 {
		t.Fatalf("dropped = %d, want 1 (burst of 6)", got)
	}
	waitCount(t, w, push.Sent, 7)
	time.Sleep(time.Until(start.Add(interval + 50*time.Millisecond)))
	wake(w, "srv-a", "device-a") // one wake back after one interval…
	wake(w, "srv-a", "device-a") // …and only one
	waitCount(t, w, push.Sent, 8)
	if got := w.Count(push.Dropped); got != 2 {
		t.Fatalf("dropped = %d, want 2", got)
	}
}

func TestWakeInFlightCap(t *testing.T) {
	release := make(chan struct{})
	var arrived atomic.Int64
	fcm := newFCMServer(t, func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	w := newWaker(t, newTokenServer(t), fcm, nil, nil)
	defer close(release) // before the waker's and servers' cleanups
	for i := range 40 {
		wake(w, "srv-"+string(rune('A'+i)), "device")
	}
	if got := w.Count(push.Dropped); got != 8 {
		t.Fatalf("dropped = %d, want 8", got)
	}
	waitFor(t, "32 sends at FCM", func() bool { return arrived.Load() == 32 })
	wake(w, "srv-late", "device") // still at the cap: dropped, not queued
	if got := w.Count(push.Dropped); got != 9 {
		t.Fatalf("dropped = %d, want 9", got)
	}
	time.Sleep(50 * time.Millisecond)
	if got := arrived.Load(); got != 32 {
		t.Fatalf("%d sends reached FCM, want 32", got)
	}
	release <- struct{}{} // one finishes: a slot frees
	waitCount(t, w, push.Sent, 1)
	wake(w, "srv-late", "device")
	waitFor(t, "33 sends at FCM", func() bool { return arrived.Load() == 33 })
}

func TestWakeRedirectNotFollowed(t *testing.T) {
	var targetHits atomic.Int64
	target := newFCMServer(t, func(http.ResponseWriter, *http.Request) { targetHits.Add(1) })
	fcm := newFCMServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+wantPath, http.StatusFound)
	})
	w := newWaker(t, newTokenServer(t), fcm, nil, nil)
	wake(w, "srv", "device-1")
	waitCount(t, w, push.SendFailed, 1)
	if targetHits.Load() != 0 || len(target.received()) != 0 {
		t.Fatal("redirect was followed")
	}
}

func TestWakeTimeout(t *testing.T) {
	fcm := newFCMServer(t, func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	w := newWaker(t, newTokenServer(t), fcm, nil, func(c *push.Config) { c.Timeout = 100 * time.Millisecond })
	wake(w, "srv", "device-1")
	waitCount(t, w, push.SendFailed, 1)
}

func TestDeviceTokenNeverLogged(t *testing.T) {
	const secret = "DEVICE-TOKEN-SECRET-123"
	var logs relaytest.LogSink
	fcm := newFCMServer(t, nil)
	w := newWaker(t, newTokenServer(t), fcm, &logs, nil)
	for range 8 { // 6 sent, 2 dropped by the bucket
		wake(w, "srv", secret)
	}
	wake(w, "srv", "")
	waitCount(t, w, push.Sent, 6)
	out := logs.String()
	if strings.Contains(out, secret) || strings.Contains(out, testAccessToken) {
		t.Fatalf("log holds the device or access token:\n%s", out)
	}
	if fp := push.Fingerprint(secret); len(fp) != 8 || !strings.Contains(out, fp) {
		t.Fatalf("log lacks fingerprint %q:\n%s", fp, out)
	}
}

func TestCredentialsValidation(t *testing.T) {
	const marker = "SECRET-MARKER-XYZ"
	good := credentialsJSON(t, "https://oauth2.invalid/token")
	var m map[string]string
	_ = json.Unmarshal(good, &m)
	with := func(k, v string) []byte {
		c := map[string]string{}
		for kk, vv := range m {
			c[kk] = vv
		}
		if v == "" {
			delete(c, k)
		} else {
			c[k] = v
		}
		b, _ := json.Marshal(c)
		return b
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"not JSON", []byte(marker + " {")},
		{"JSON array", []byte(`["` + marker + `"]`)},
		{"wrong type", with("type", "authorized_user-"+marker)},
		{"no project", with("project_id", "")},
		{"no client email", with("client_email", "")},
		{"no key", with("private_key", "")},
		{"key not PEM", with("private_key", marker)},
		{"key garbage PEM", with("private_key", "-----BEGIN PRIVATE KEY-----\nU0VDUkVULU1BUktFUi1YWVo=\n-----END PRIVATE KEY-----\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".json")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := push.LoadCredentialsFile(path)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if strings.Contains(msg, marker) || strings.Contains(msg, "U0VDUkVU") || strings.Contains(msg, "\n") {
				t.Fatalf("error echoes content or spans lines: %q", msg)
			}
		})
	}
	if _, err := push.LoadCredentialsFile(filepath.Join(dir, "missing.json")); err == nil {
		t.Fatal("missing file accepted")
	}
	c, err := push.ParseCredentials(good)
	if err != nil || c.ProjectID != testProject {
		t.Fatalf("good key: %v", err)
	}
}
