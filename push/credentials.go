package push

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jwt"
)

// Scope is the OAuth2 scope FCM HTTP v1 sends need.
const Scope = "https://www.googleapis.com/auth/firebase.messaging"

// Credentials is a validated service-account key.
type Credentials struct {
	ProjectID string
	jwt       *jwt.Config
}

// LoadCredentialsFile reads and validates a service-account JSON key file.
// Its errors name the file, never its content.
func LoadCredentialsFile(path string) (*Credentials, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is added below, once
		}
		return nil, fmt.Errorf("fcm credentials file %q: %v", path, err)
	}
	c, err := ParseCredentials(data)
	if err != nil {
		return nil, fmt.Errorf("fcm credentials file %q: %v", path, err)
	}
	return c, nil
}

// ParseCredentials validates a service-account JSON key: type
// "service_account", a project_id, a client_email and a PEM RSA private key.
// Its errors say which check failed and never quote the input.
func ParseCredentials(data []byte) (*Credentials, error) {
	var f struct {
		Type        string `json:"type"`
		ProjectID   string `json:"project_id"`
		ClientEmail string `json:"client_email"`
		PrivateKey  string `json:"private_key"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("not valid JSON (at byte %d)", se.Offset)
		}
		return nil, errors.New("not a JSON object with string fields")
	}
	switch {
	case f.Type != "service_account":
		return nil, errors.New(`"type" is not "service_account"`)
	case f.ProjectID == "":
		return nil, errors.New(`"project_id" is missing`)
	case f.ClientEmail == "":
		return nil, errors.New(`"client_email" is missing`)
	case f.PrivateKey == "":
		return nil, errors.New(`"private_key" is missing`)
	}
	if err := checkRSAKey([]byte(f.PrivateKey)); err != nil {
		return nil, err
	}
	cfg, err := google.JWTConfigFromJSON(data, Scope)
	if err != nil {
		return nil, errors.New("not a usable service-account key")
	}
	return &Credentials{ProjectID: f.ProjectID, jwt: cfg}, nil
}

// checkRSAKey does at start what the JWT signer would do at the first wake.
func checkRSAKey(key []byte) error {
	block, _ := pem.Decode(key)
	if block == nil {
		return errors.New(`"private_key" is not PEM`)
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if _, ok := k.(*rsa.PrivateKey); !ok {
			return errors.New(`"private_key" is not an RSA key`)
		}
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
		return errors.New(`"private_key" is not a PKCS#8 or PKCS#1 RSA key`)
	}
	return nil
}
