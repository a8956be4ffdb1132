package join

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/corral-dev/corral/bootstrap/pki"
)

// Material is a node's TLS material, in PEM.
type Material struct {
	CA, Cert, Key []byte
}

// requester holds Request's tunables, so that tests can shorten the backoff
// and observe retries.
type requester struct {
	minDelay, maxDelay time.Duration // backoff between rounds of attempts
	timeout            time.Duration // per HTTP request, so a hung server cannot stall the others

	retrying func(server string, err error) // if set, called for each attempt that will be retried
}

var defaultRequester = requester{minDelay: 250 * time.Millisecond, maxDelay: 10 * time.Second, timeout: 15 * time.Second}

// Request obtains a certificate for req from the first of servers (host:port
// of members' join endpoints, tried in order) that grants one. The key is
// generated here and never sent.
//
// Each attempt fetches the CA without verifying the server, accepts it only
// if its hash is token.CAHash, and then sends the CSR with token.Secret over
// a new connection that verifies the server against that CA, so a man in the
// middle can neither substitute a CA nor learn the secret.
//
// Network errors and server errors (5xx) are retried with backoff until ctx
// is done, because a member may still be starting. A refusal (a CA that is
// not the pinned one, a wrong secret, a rejected CSR) is final for that
// server. Request fails when every server has refused or ctx is done, with
// the errors of all servers joined.
func Request(ctx context.Context, servers []string, token pki.Token, req pki.CertRequest) (*Material, error) {
	return defaultRequester.request(ctx, servers, token, req)
}

func (r requester) request(ctx context.Context, servers []string, token pki.Token, req pki.CertRequest) (*Material, error) {
	if len(servers) == 0 {
		return nil, errors.New("join: no servers; pass the host:port of at least one member's join endpoint")
	}
	if token.CAHash == "" || token.Secret == "" {
		return nil, errors.New("join: the token is empty; read it with pki.ParseToken")
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	csrPEM, err := pki.NewCSR(key, req)
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return nil, err
	}

	errs := make([]error, len(servers)) // each server's latest error
	refused := make([]bool, len(servers))
	for delay := r.minDelay; ; delay = min(2*delay, r.maxDelay) {
		retry := false
		for i, server := range servers {
			if refused[i] {
				continue
			}
			m, err := r.attempt(ctx, server, token, csrPEM, &key.PublicKey)
			if err == nil {
				m.Key = keyPEM
				return m, nil
			}
			errs[i] = err
			if refused[i] = errors.As(err, new(refusal)); !refused[i] {
				retry = true
				if r.retrying != nil {
					r.retrying(server, err)
				}
			}
		}
		if !retry {
			return nil, errors.Join(errs...)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("join: no server issued a certificate before %w:\n%w", context.Cause(ctx), errors.Join(errs...))
		case <-time.After(jitter(delay)):
		}
	}
}

// refusal marks an answer that asking the same server again will not change.
type refusal struct{ error }

func (r refusal) Unwrap() error { return r.error }

func refusedf(format string, args ...any) error {
	return refusal{fmt.Errorf(format, args...)}
}

// attempt asks one server for a certificate.
func (r requester) attempt(ctx context.Context, server string, token pki.Token, csrPEM []byte, pub *ecdsa.PublicKey) (*Material, error) {
	// The CA is not known yet, so the server cannot be verified on this
	// connection; checking the hash of what it sends is the verification.
	body, err := r.do(ctx, server, &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true},
		http.MethodGet, caPath, "", nil)
	if err != nil {
		return nil, err
	}
	ca, err := pki.ParseCert(body)
	if err != nil {
		return nil, refusedf("join: server %s did not send a CA certificate: %w", server, err)
	}
	// Hash and trust the parsed certificate alone: a man in the middle could
	// append a CA of his own after the genuine one.
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	if hash, _ := pki.HashPEM(caPEM); hash != token.CAHash { // caPEM is a parsed certificate: no error
		return nil, refusedf("join: server %s presented CA %s, but the token pins %s; is this the right cluster/token?",
			server, hash, token.CAHash)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	reqBody, err := json.Marshal(signRequest{CSR: string(csrPEM)})
	if err != nil {
		return nil, err
	}
	body, err = r.do(ctx, server, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots},
		http.MethodPost, signPath, "Bearer "+token.Secret, reqBody)
	if err != nil {
		return nil, err
	}
	var resp signResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, refusedf("join: server %s sent an unreadable answer: %w", server, err)
	}
	// The answer's "ca" is ignored: the pinned CA is the one to trust.
	if err := checkIssued([]byte(resp.Cert), roots, pub); err != nil {
		return nil, refusedf("join: server %s issued an unusable certificate: %w", server, err)
	}
	return &Material{CA: caPEM, Cert: []byte(resp.Cert)}, nil
}

// do sends one request over a fresh connection and returns the body of a 200
// answer. Errors that are not worth retrying are refusals.
func (r requester) do(ctx context.Context, server string, tlsConfig *tls.Config, method, path, auth string, body []byte) ([]byte, error) {
	client := &http.Client{
		Timeout:   r.timeout,
		Transport: &http.Transport{TLSClientConfig: tlsConfig, DisableKeepAlives: true},
		// A member never redirects; following one could carry the secret
		// elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+server+path, bytes.NewReader(body))
	if err != nil {
		return nil, refusedf("join: server %q: %w", server, err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.As(err, new(*tls.CertificateVerificationError)) {
			return nil, refusedf("join: server %s serves the pinned CA but its certificate is not signed by it: %w", server, err)
		}
		return nil, fmt.Errorf("join: server %s: %w", server, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("join: server %s: reading %s: %w", server, path, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return data, nil
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, refusedf("join: %s refused the token's secret (wrong token?)", server)
	case resp.StatusCode >= 500:
		return nil, fmt.Errorf("join: server %s: %s %s: %s", server, method, path, reason(resp.Status, data))
	default:
		return nil, refusedf("join: server %s rejected %s %s: %s", server, method, path, reason(resp.Status, data))
	}
}

// reason describes a failed answer by its status and the server's message.
func reason(status string, body []byte) string {
	var e errorResponse
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return status + ": " + e.Error
	}
	if msg := strings.TrimSpace(string(body)); msg != "" && len(msg) < 200 {
		return status + ": " + msg
	}
	return status
}

// checkIssued verifies that certPEM chains to roots and certifies pub, so a
// node never stores a certificate it cannot use.
func checkIssued(certPEM []byte, roots *x509.CertPool, pub *ecdsa.PublicKey) error {
	cert, err := pki.ParseCert(certPEM)
	if err != nil {
		return err
	}
	if !pub.Equal(cert.PublicKey) {
		return errors.New("it is not for the key in the request")
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// jitter spreads d over [d/2, 3d/2), so that nodes booted together do not
// retry in lockstep.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.5 + rand.Float64()))
}
