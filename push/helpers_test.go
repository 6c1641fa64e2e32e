package push_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"switchboard/push"
)

const (
	testProject     = "proj-1"
	testAccessToken = "ya29.test-access-token"
	wantPath        = "/v1/projects/" + testProject + "/messages:send"
)

var (
	keyOnce sync.Once
	keyPEM  string
)

// credentialsJSON is a service-account key (a fresh RSA key) whose token_uri
// is tokenURL.
func credentialsJSON(t testing.TB, tokenURL string) []byte {
	t.Helper()
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		keyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	})
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": testProject, "private_key_id": "kid",
		"private_key": keyPEM, "client_email": "relay@proj-1.iam.gserviceaccount.com",
		"token_uri": tokenURL,
	})
	return b
}

// tokenServer is a fake OAuth2 token endpoint for the JWT-bearer grant.
type tokenServer struct {
	*httptest.Server
	hits atomic.Int64
	fail atomic.Bool
}

func newTokenServer(t testing.TB) *tokenServer {
	ts := &tokenServer{}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.hits.Add(1)
		_ = r.ParseForm()
		if ts.fail.Load() || r.Method != http.MethodPost ||
			r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" || r.PostForm.Get("assertion") == "" {
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"`+testAccessToken+`","token_type":"Bearer","expires_in":3600}`)
	}))
	t.Cleanup(ts.Close)
	return ts
}

// fcmServer is a fake FCM HTTP v1 endpoint: it checks each request and
// records the device token; answer decides the reply.
type fcmServer struct {
	*httptest.Server
	mu     sync.Mutex
	tokens []string
	bad    []string // what was wrong with a request
	answer func(w http.ResponseWriter, r *http.Request)
}

func newFCMServer(t testing.TB, answer func(w http.ResponseWriter, r *http.Request)) *fcmServer {
	fs := &fcmServer{answer: answer}
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m struct {
			Message struct {
				Token string `json:"token"`
			} `json:"message"`
		}
		_ = json.Unmarshal(body, &m)
		tok, _ := json.Marshal(m.Message.Token)
		want := `{"message":{"token":` + string(tok) + `,"android":{"priority":"high"}}}`
		fs.mu.Lock()
		switch {
		case r.Method != http.MethodPost:
			fs.bad = append(fs.bad, "method "+r.Method)
		case r.URL.Path != wantPath:
			fs.bad = append(fs.bad, "path "+r.URL.Path)
		case r.Header.Get("Authorization") != "Bearer "+testAccessToken:
			fs.bad = append(fs.bad, "authorization header")
		case string(body) != want:
			fs.bad = append(fs.bad, "body "+string(body))
		}
		fs.tokens = append(fs.tokens, m.Message.Token)
		fs.mu.Unlock()
		if fs.answer != nil {
			fs.answer(w, r)
			return
		}
		_, _ = io.WriteString(w, `{"name":"projects/proj-1/messages/1"}`)
	}))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *fcmServer) received() []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]string(nil), fs.tokens...)
}

func (fs *fcmServer) checkRequests(t testing.TB) {
	t.Helper()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, b := range fs.bad {
		t.Errorf("bad FCM request: %s", b)
	}
}

// newWaker builds a Waker on the fakes; change adjusts its Config.
func newWaker(t testing.TB, tok *tokenServer, fcm *fcmServer, logs io.Writer, change func(*push.Config)) *push.Waker {
	t.Helper()
	creds, err := push.ParseCredentials(credentialsJSON(t, "https://oauth2.invalid/token"))
	if err != nil {
		t.Fatalf("ParseCredentials: %v", err)
	}
	if logs == nil {
		logs = io.Discard
	}
	cfg := push.Config{
		Credentials: creds, Endpoint: fcm.URL, TokenURL: tok.URL, Timeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if change != nil {
		change(&cfg)
	}
	w, err := push.New(cfg)
	if err != nil {
		t.Fatalf("push.New: %v", err)
	}
	t.Cleanup(w.Close)
	return w
}

func wake(w *push.Waker, serverID, token string) {
	b, _ := json.Marshal(map[string]string{"platform": "fcm", "token": token})
	w.Wake(serverID, b)
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitCount(t testing.TB, w *push.Waker, o push.Outcome, n uint64) {
	t.Helper()
	waitFor(t, o.String(), func() bool { return w.Count(o) >= n })
	if got := w.Count(o); got != n {
		t.Fatalf("%s = %d, want %d", o, got, n)
	}
}
