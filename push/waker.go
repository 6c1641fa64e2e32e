package push

import (
	"switchboard/ratelimit"

	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
)

// Limits from docs/protocol.md, "Push wakes".
const (
	DefaultInterval    = 10 * time.Second // a server-id regains one wake this often
	DefaultBurst       = 6                // wakes a server-id may send at once
	DefaultMaxInFlight = 32               // sends in flight relay-wide
	DefaultMaxServers  = 1 << 16          // server-id buckets tracked at once
)

// Config configures a Waker. Zero fields take the defaults above.
type Config struct {
	Credentials *Credentials // required
	Endpoint    string       // FCM base URL; DefaultEndpoint when empty
	TokenURL    string       // OAuth2 token endpoint; the key's token_uri when empty
	Timeout     time.Duration
	Interval    time.Duration
	Burst       int
	MaxInFlight int
	MaxServers  int
	Logger      *slog.Logger // nil discards
}

// Waker admits push wakes and sends them on their own goroutines.
type Waker struct {
	url      string
	client   *http.Client
	tokens   oauth2.TokenSource
	buckets  *ratelimit.Limiter[string]
	inFlight chan struct{} // a slot per send in flight
	log      *slog.Logger
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	counts   [numOutcomes]atomic.Uint64
}

// New returns a Waker ready to send.
func New(cfg Config) (*Waker, error) {
	if cfg.Credentials == nil {
		return nil, errors.New("push: no credentials")
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = DefaultEndpoint
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.MaxServers <= 0 {
		cfg.MaxServers = DefaultMaxServers
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	client := newHTTPClient(cfg.Timeout)
	jc := *cfg.Credentials.jwt // a copy: the token URL is this Waker's
	if cfg.TokenURL != "" {
		jc.TokenURL = cfg.TokenURL
	}
	ctx, cancel := context.WithCancel(context.Background())
	// The token source keeps this context for every fetch: fetches use the
	// same client (timeout, no redirects). ReuseTokenSource (inside
	// TokenSource) caches the token until shortly before it expires.
	tokenCtx := context.WithValue(context.Background(), oauth2.HTTPClient, client)
	return &Waker{
		url:      sendURL(cfg.Endpoint, cfg.Credentials.ProjectID),
		client:   client,
		tokens:   jc.TokenSource(tokenCtx),
		buckets:  ratelimit.New[string](cfg.Burst, cfg.Interval, cfg.MaxServers),
		inFlight: make(chan struct{}, cfg.MaxInFlight),
		log:      cfg.Logger,
		ctx:      ctx,
		cancel:   cancel,
	}, nil
}

// wakeRequest is the push_wake object.
type wakeRequest struct {
	Platform string `json:"platform"`
	Token    string `json:"token"`
}

// Wake admits one push_wake object from serverID's binary and, if admitted,
// sends it on a new goroutine. It never blocks: over a limit the wake is
// dropped. pushWake is only read during the call.
func (w *Waker) Wake(serverID string, pushWake []byte) {
	var req wakeRequest
	if err := json.Unmarshal(pushWake, &req); err != nil {
		w.drop("push_wake is not {platform, token} strings")
		return
	}
	switch {
	case req.Platform != "fcm":
		w.drop("platform is not fcm")
		return
	case req.Token == "":
		w.drop("empty token")
		return
	}
	select {
	case w.inFlight <- struct{}{}:
	default:
		w.drop("sends in flight at the cap", "token_fp", Fingerprint(req.Token))
		return
	}
	if !w.buckets.Allow(serverID) {
		<-w.inFlight
		w.drop("server-id over its wake rate", "token_fp", Fingerprint(req.Token))
		return
	}
	w.wg.Add(1)
	go w.send(req.Token)
}

func (w *Waker) drop(why string, attrs ...any) {
	w.counts[Dropped].Add(1)
	w.log.Debug("push wake dropped: "+why, attrs...)
}

func (w *Waker) send(deviceToken string) {
	defer w.wg.Done()
	outcome := TokenFetchFailed
	tok, err := w.tokens.Token()
	if err == nil {
		outcome = send(w.ctx, w.client, w.url, tok.AccessToken, deviceToken)
	}
	<-w.inFlight // before counting: whoever sees the outcome finds the slot free
	w.counts[outcome].Add(1)
	level := slog.LevelDebug
	if outcome == SendFailed || outcome == TokenFetchFailed {
		level = slog.LevelWarn
	}
	// err from a token fetch may quote the token endpoint's answer, never our
	// key or a device token; it is not logged anyway, only the outcome.
	w.log.Log(w.ctx, level, "push wake", "outcome", outcome.String(), "token_fp", Fingerprint(deviceToken))
}

// Count returns how many wakes ended in outcome o.
func (w *Waker) Count(o Outcome) uint64 { return w.counts[o].Load() }

// Outcomes calls yield with each outcome's name and count, in a fixed order.
func (w *Waker) Outcomes(yield func(outcome string, n uint64)) {
	for o := Outcome(0); o < numOutcomes; o++ {
		yield(o.String(), w.counts[o].Load())
	}
}

// Close cancels sends in flight and waits for their goroutines to end.
func (w *Waker) Close() {
	w.cancel()
	w.wg.Wait()
}

// Fingerprint is the first 8 hex digits of a device token's SHA-256: enough
// to match log lines, useless to send to.
func Fingerprint(deviceToken string) string {
	sum := sha256.Sum256([]byte(deviceToken))
	return hex.EncodeToString(sum[:4])
}
