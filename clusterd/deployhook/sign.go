// Package deployhook is the cluster's deploy webhook: the book's Lambda
// behind API Gateway, served by clusterd itself. A POST /deploy signed
// with the cluster's shared secret writes its JSON body to one etcd key;
// a sidekick unit watching that key (clusterctl exec-watch) restarts its
// service.
//
// A request carries three headers:
//
//	X-Corral-Timestamp: unix seconds
//	X-Corral-Nonce:     random, 8 to 128 of [A-Za-z0-9_-]
//	X-Corral-Signature: sha256=hex(HMAC-SHA256(secret, timestamp + "." + nonce + "." + body))
//
// A request with a bad signature, a timestamp more than Window away from
// the machine's clock, or a nonce any machine has accepted before gets 401
// and changes nothing: accepted nonces are kept in etcd, under a lease
// that outlives the window, so a replay to another machine fails too.
package deployhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// The request's headers.
const (
	TimestampHeader = "X-Corral-Timestamp"
	NonceHeader     = "X-Corral-Nonce"
	SignatureHeader = "X-Corral-Signature"
)

// Window is how far a request's timestamp may be from the machine's clock,
// either way.
const Window = 5 * time.Minute

// Path is the endpoint's path.
const Path = "/deploy"

// Sign returns the X-Corral-Signature value for a request.
func Sign(secret, timestamp, nonce string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp + "." + nonce + "."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// NewRequest makes a signed POST of body to url (https://host:port/deploy),
// stamped now with a fresh random nonce.
func NewRequest(ctx context.Context, url, secret string, body []byte, now time.Time) (*http.Request, error) {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	ts, nonce := strconv.FormatInt(now.Unix(), 10), hex.EncodeToString(raw[:])
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(TimestampHeader, ts)
	req.Header.Set(NonceHeader, nonce)
	req.Header.Set(SignatureHeader, Sign(secret, ts, nonce, body))
	return req, nil
}

// Result is a successful deploy's answer.
type Result struct {
	Key      string `json:"key"`
	Revision int64  `json:"revision"` // the etcd revision of the write
}

// errorBody is every refusal's answer.
type errorBody struct {
	Error string `json:"error"`
}

// Do sends req with client and decodes the answer: the Result on 200, else
// an error with the status and the server's reason.
func Do(client *http.Client, req *http.Request) (Result, error) {
	resp, err := client.Do(req)
	if err != nil {
		return Result{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = string(bytes.TrimSpace(b))
		}
		return Result{}, fmt.Errorf("%s: %s", resp.Status, e.Error)
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return Result{}, fmt.Errorf("%s answered %q, not a deploy result: %w", req.URL, b, err)
	}
	return r, nil
}
