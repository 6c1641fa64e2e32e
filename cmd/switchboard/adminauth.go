package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// basicAuth guards the admin listener with HTTP basic auth against a file
// of user:bcrypt-hash lines, read once at start (as node_exporter's web
// config does, but as a flag).
//
// bcrypt is slow on purpose (tens of ms per check at the usual cost), and a
// scraper sends the same credentials every 15 s or so. A pair that passed
// is remembered as its SHA-256, so steady scrapes cost a hash, not a bcrypt;
// only wrong or new credentials pay bcrypt, one check at a time, so a
// guessing client holds at most one core.
type basicAuth struct {
	users map[string][]byte // user -> bcrypt hash
	dummy []byte            // checked for unknown users, so they take as long as known ones

	mu     sync.Mutex
	passed map[string][sha256.Size]byte // user -> SHA-256 of the password that passed
	check  sync.Mutex                   // one bcrypt at a time
}

// adminRealm is the realm a 401 names: what a browser shows the operator.
const adminRealm = `Basic realm="switchboard admin", charset="UTF-8"`

// loadBasicAuth reads path: one user:bcrypt-hash per line; blank lines and
// lines starting with # are skipped. Errors name the file and line, never a
// hash.
func loadBasicAuth(path string) (*basicAuth, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	a := &basicAuth{users: map[string][]byte{}, passed: map[string][sha256.Size]byte{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	cost := 0
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("%s line %d: want user:bcrypt-hash", path, n)
		}
		if _, dup := a.users[user]; dup {
			return nil, fmt.Errorf("%s line %d: user %q given twice", path, n, user)
		}
		c, err := bcrypt.Cost([]byte(hash))
		if err != nil {
			return nil, fmt.Errorf("%s line %d: user %q: not a bcrypt hash", path, n, user)
		}
		a.users[user], cost = []byte(hash), max(cost, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(a.users) == 0 {
		return nil, fmt.Errorf("%s: no user:bcrypt-hash line", path)
	}
	// A hash at the file's highest cost for unknown users, so a wrong
	// user name takes as long as a wrong password.
	if a.dummy, err = bcrypt.GenerateFromPassword([]byte("no such user"), cost); err != nil {
		return nil, err
	}
	return a, nil
}

// allowed reports whether user:pass matches a line of the file.
func (a *basicAuth) allowed(user, pass string) bool {
	sum := sha256.Sum256([]byte(pass))
	a.mu.Lock()
	prev, seen := a.passed[user]
	a.mu.Unlock()
	if seen && subtle.ConstantTimeCompare(prev[:], sum[:]) == 1 {
		return true
	}
	hash, known := a.users[user]
	if !known {
		hash = a.dummy
	}
	a.check.Lock()
	ok := bcrypt.CompareHashAndPassword(hash, []byte(pass)) == nil && known
	a.check.Unlock()
	if ok {
		a.mu.Lock()
		a.passed[user] = sum
		a.mu.Unlock()
	}
	return ok
}

// wrap answers 401 with a WWW-Authenticate challenge unless the request
// carries credentials from the file.
func (a *basicAuth) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || !a.allowed(user, pass) {
			w.Header().Set("WWW-Authenticate", adminRealm)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
