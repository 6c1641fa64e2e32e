package wsframe

import (
	"crypto/sha1"
	"encoding/base64"
	"math/rand"
	"testing"
)

func TestPutAcceptKeyRFCExample(t *testing.T) {
	// RFC 6455 section 1.3.
	var got [AcceptKeySize]byte
	PutAcceptKey(&got, []byte("dGhlIHNhbXBsZSBub25jZQ=="))
	if string(got[:]) != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("accept = %s", got[:])
	}
}

func TestPutAcceptKeyRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 1000; i++ {
		var raw [16]byte
		rng.Read(raw[:])
		key := base64.StdEncoding.EncodeToString(raw[:])
		if !ValidKey([]byte(key)) {
			t.Fatalf("ValidKey(%q) = false", key)
		}
		sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		want := base64.StdEncoding.EncodeToString(sum[:])
		var got [AcceptKeySize]byte
		PutAcceptKey(&got, []byte(key))
		if string(got[:]) != want {
			t.Fatalf("PutAcceptKey(%q) = %s, want %s", key, got[:], want)
		}
	}
}

func TestValidKey(t *testing.T) {
	cases := []struct {
		key  string
		want bool
	}{
		{"dGhlIHNhbXBsZSBub25jZQ==", true},
		{"AAAAAAAAAAAAAAAAAAAAAA==", true},
		{"/////////////////////w==", true},
		{"", false},
		{"dGhlIHNhbXBsZSBub25jZQ=", false},   // 23 bytes
		{"dGhlIHNhbXBsZSBub25jZQ===", false}, // 25 bytes
		{"dGhlIHNhbXBsZSBub25jZQ", false},    // unpadded
		{"AAAAAAAAAAAAAAAAAAAAAAAA", false},  // 18 bytes decoded
		{"AAAAAAAAAAAAAAAAAAAAAAA=", false},  // 17 bytes decoded
		{"dGhlIHNhbXBsZSBub25jZQ!=", false},
		{"dGhlIHNhbXBsZSBub25jZQ-_", false}, // URL alphabet
		{"dGhlIHNhbXBsZSBub25j ZQ=", false},
		{"dGhlIHNhbXBsZSBub25jZ\n==", false},
		{"==dGhlIHNhbXBsZSBub25jZQ", false},
		{"dGhlIHNhbXBs=SBub25jZQ==", false},
	}
	for _, c := range cases {
		if got := ValidKey([]byte(c.key)); got != c.want {
			t.Errorf("ValidKey(%q) = %v, want %v", c.key, got, c.want)
		}
	}
}

func TestAcceptAllocs(t *testing.T) {
	key := []byte("dGhlIHNhbXBsZSBub25jZQ==")
	var dst [AcceptKeySize]byte
	if n := testing.AllocsPerRun(100, func() {
		if ValidKey(key) {
			PutAcceptKey(&dst, key)
		}
	}); n != 0 {
		t.Errorf("ValidKey/PutAcceptKey allocate %v times", n)
	}
}
