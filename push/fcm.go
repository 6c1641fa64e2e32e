package push

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"
)

// DefaultEndpoint is FCM's base URL.
const DefaultEndpoint = "https://fcm.googleapis.com"

// DefaultTimeout bounds one HTTP call (token fetch or send).
const DefaultTimeout = 10 * time.Second

// newHTTPClient is the client for both the token endpoint and FCM: its own
// Transport, a per-call timeout, and redirects returned, not followed (a
// redirect is a send failure).
func newHTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: 32,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: timeout,
			ForceAttemptHTTP2:   true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// sendURL is where one project's messages are POSTed.
func sendURL(endpoint, projectID string) string {
	return strings.TrimRight(endpoint, "/") + "/v1/projects/" + projectID + "/messages:send"
}

// messageBody is the exact request body: a high-priority, data-less message.
func messageBody(deviceToken string) []byte {
	tok, _ := json.Marshal(deviceToken) // a string always marshals
	b := make([]byte, 0, len(tok)+64)
	b = append(b, `{"message":{"token":`...)
	b = append(b, tok...)
	b = append(b, `,"android":{"priority":"high"}}}`...)
	return b
}

// send POSTs one message and classifies FCM's answer.
func send(ctx context.Context, client *http.Client, url, accessToken, deviceToken string) Outcome {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(messageBody(deviceToken)))
	if err != nil {
		return SendFailed
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := client.Do(req)
	if err != nil {
		return SendFailed
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	return classify(resp.StatusCode, body)
}

// classify maps FCM's status and error body to an outcome: 2xx is sent; 404,
// status NOT_FOUND or an FcmError UNREGISTERED is unregistered; anything
// else (redirects included) is send_failed.
func classify(status int, body []byte) Outcome {
	if status >= 200 && status < 300 {
		return Sent
	}
	if status == http.StatusNotFound {
		return Unregistered
	}
	var e struct {
		Error struct {
			Status  string `json:"status"`
			Details []struct {
				Type      string `json:"@type"`
				ErrorCode string `json:"errorCode"`
			} `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil {
		if e.Error.Status == "NOT_FOUND" || e.Error.Status == "UNREGISTERED" {
			return Unregistered
		}
		for _, d := range e.Error.Details {
			if d.ErrorCode == "UNREGISTERED" {
				return Unregistered
			}
		}
	}
	return SendFailed
}
