package loop_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"switchboard/internal/relaytest"
	"switchboard/loop"
	"switchboard/push"
)

// pushFakes are a fake OAuth2 token endpoint and a fake FCM on loopback;
// fcm's handler runs after the device token is recorded.
type pushFakes struct {
	mu     sync.Mutex
	tokens []string
	waker  *push.Waker
}

func (f *pushFakes) received() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tokens...)
}

func startPush(t *testing.T, logs io.Writer, fcm func(w http.ResponseWriter, r *http.Request)) *pushFakes {
	t.Helper()
	tok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"at-1","token_type":"Bearer","expires_in":3600}`)
	}))
	t.Cleanup(tok.Close)
	f := &pushFakes{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			Message struct {
				Token string `json:"token"`
			} `json:"message"`
		}
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &m)
		if r.URL.Path != "/v1/projects/proj-1/messages:send" || r.Header.Get("Authorization") != "Bearer at-1" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.tokens = append(f.tokens, m.Message.Token)
		f.mu.Unlock()
		if fcm != nil {
			fcm(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	key, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "proj-1", "client_email": "r@proj-1.iam.gserviceaccount.com",
		"private_key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), "token_uri": tok.URL,
	})
	creds, err := push.ParseCredentials(key)
	if err != nil {
		t.Fatal(err)
	}
	if logs == nil {
		logs = io.Discard
	}
	f.waker, err = push.New(push.Config{Credentials: creds, Endpoint: srv.URL,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.waker.Close)
	return f
}

func metricLine(t *testing.T, r *relay, series string) string {
	t.Helper()
	var buf bytes.Buffer
	_ = r.WriteMetrics(&buf)
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.HasPrefix(l, series+" ") {
			return l
		}
	}
	t.Fatalf("no series %s", series)
	return ""
}

// A binary's push_wake envelope reaches FCM, and the device token never
// reaches the relay's log.
func TestPushWakeReachesFCM(t *testing.T) {
	const device = "device-token-e2e-SECRET"
	var logs relaytest.LogSink
	f := startPush(t, &logs, nil)
	r := startRelay(t, loop.Config{Push: f.waker,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	b := r.binary(t, "srv-push")
	b.send(t, `{"push_wake":{"platform":"fcm","token":"`+device+`"}}`)
	b.send(t, `{"push_wake":{"platform":"apns","token":"`+device+`"}}`)
	waitFor(t, "wake at FCM", func() bool { return len(f.received()) == 1 })
	if got := f.received(); got[0] != device {
		t.Fatalf("FCM got token %q", got[0])
	}
	waitFor(t, "sent counted", func() bool {
		return metricLine(t, r, `pyrycode_relay_push_wakes_total{outcome="sent"}`) == `pyrycode_relay_push_wakes_total{outcome="sent"} 1`
	})
	if l := metricLine(t, r, `pyrycode_relay_push_wakes_total{outcome="dropped"}`); !strings.HasSuffix(l, " 1") {
		t.Fatalf("%s, want 1 (apns)", l)
	}
	if r.Counters().Drop(loop.DropPushWakeOff) != 0 {
		t.Fatal("counted as push off")
	}
	if strings.Contains(logs.String(), device) {
		t.Fatalf("device token logged:\n%s", logs.String())
	}
}

// A send stuck at FCM holds only its own goroutine: the binary and its
// phones keep round-tripping through the relay at full speed.
func TestPushWakeSlowFCMDoesNotBlockRouting(t *testing.T) {
	release := make(chan struct{})
	f := startPush(t, nil, func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	r := startRelay(t, loop.Config{Push: f.waker})
	defer close(release)
	b := r.binary(t, "srv-slow")
	p := r.phone(t, "srv-slow")
	id := connIDOf(t, p, b)
	for i := range 10 { // 6 admitted (burst) and stuck at FCM, 4 dropped
		b.send(t, fmt.Sprintf(`{"push_wake":{"platform":"fcm","token":"dev-%d"}}`, i))
	}
	waitFor(t, "6 sends stuck at FCM", func() bool { return len(f.received()) == 6 })
	start := time.Now()
	const rounds = 200
	for i := range rounds {
		p.send(t, fmt.Sprintf(`{"n":%d}`, i))
		if got, want := string(b.next(t)), fmt.Sprintf(`{"conn_id":%q,"frame":{"n":%d}}`, id, i); got != want {
			t.Fatalf("binary got %s, want %s", got, want)
		}
		b.send(t, fmt.Sprintf(`{"conn_id":%q,"frame":{"r":%d}}`, id, i))
		if got, want := string(p.next(t)), fmt.Sprintf(`{"r":%d}`, i); got != want {
			t.Fatalf("phone got %s, want %s", got, want)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("%d round trips took %s with FCM stuck", rounds, d)
	}
	if l := metricLine(t, r, `pyrycode_relay_push_wakes_total{outcome="dropped"}`); !strings.HasSuffix(l, " 4") {
		t.Fatalf("%s, want 4", l)
	}
	if l := metricLine(t, r, `pyrycode_relay_push_wakes_total{outcome="sent"}`); !strings.HasSuffix(l, " 0") {
		t.Fatalf("%s while FCM is stuck", l)
	}
}
