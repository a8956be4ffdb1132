package join

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/internal/syncbuf"
)

// cluster is a CA and token, whose members the tests start.
type cluster struct {
	ca    *pki.CA
	token pki.Token
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	ca, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	token, err := pki.NewToken(ca)
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{ca: ca, token: token}
}

// member is a running join endpoint.
type member struct {
	addr  string         // host:port
	signs atomic.Int32   // sign requests received
	log   syncbuf.Buffer // what the handler logged
}

// serve starts a member's join endpoint on real HTTPS, on ln or, if ln is
// nil, on a fresh loopback port, serving h if it is not nil and the
// cluster's Handler otherwise.
func (c *cluster) serve(t *testing.T, ln net.Listener, h http.Handler) *member {
	t.Helper()
	m := &member{}
	if h == nil {
		h = Handler(c.ca, c.token, slog.New(slog.NewTextHandler(&m.log, nil)))
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == signPath {
			m.signs.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	if ln != nil {
		srv.Listener.Close()
		srv.Listener = ln
	}
	// Refused handshakes are part of the tests; keep them out of the output.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = c.serverTLS(t)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	m.addr = srv.Listener.Addr().String()
	return m
}

// serverTLS is a member's join endpoint configuration: a certificate for
// 127.0.0.1 from the cluster CA, client certificates optional.
func (c *cluster) serverTLS(t *testing.T) *tls.Config {
	t.Helper()
	certPEM, keyPEM, err := c.ca.Issue(pki.CertRequest{CommonName: "core-1", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pki.ServerTLS(c.ca.CertPEM(), certPEM, keyPEM, false)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// noRetries is a requester that fails the test if it ever retries.
func noRetries(t *testing.T) requester {
	r := defaultRequester
	r.retrying = func(server string, err error) { t.Errorf("retried %s after: %v", server, err) }
	return r
}

var nodeRequest = pki.CertRequest{
	CommonName: "worker-3",
	IPs:        []net.IP{net.ParseIP("10.77.0.23")},
	DNSNames:   []string{"worker-3.test"},
}

func TestRequest(t *testing.T) {
	c := newCluster(t)
	m := c.serve(t, nil, nil)

	got, err := noRetries(t).request(testContext(t), []string{m.addr}, c.token, nodeRequest)
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	if !bytes.Equal(got.CA, c.ca.CertPEM()) {
		t.Error("returned CA is not the cluster CA")
	}
	if _, err := tls.X509KeyPair(got.Cert, got.Key); err != nil {
		t.Errorf("returned certificate and key do not belong together: %v", err)
	}
	cert, err := pki.ParseCert(got.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(c.ca.Cert); err != nil {
		t.Errorf("certificate is not signed by the cluster CA: %v", err)
	}
	if cert.Subject.CommonName != "worker-3" {
		t.Errorf("CN = %q, want worker-3", cert.Subject.CommonName)
	}
	if len(cert.IPAddresses) == 0 || !cert.IPAddresses[0].Equal(nodeRequest.IPs[0]) {
		t.Errorf("IPs = %v, want %v first", cert.IPAddresses, nodeRequest.IPs[0])
	}

	// The material is what a node needs to be a member: a client built from
	// it passes a server that requires client certificates.
	cli, err := pki.ClientTLS(got.CA, got.Cert, got.Key)
	if err != nil {
		t.Fatal(err)
	}
	srv := c.serverTLS(t)
	srv.ClientAuth = tls.RequireAndVerifyClientCert
	assertHandshake(t, srv, cli)

	if !strings.Contains(m.log.String(), "issued certificate") {
		t.Errorf("issuing was not logged; log:\n%s", m.log.String())
	}
}

// assertHandshake checks that a client using cli completes a TLS handshake
// with a server using srv over loopback.
func assertHandshake(t *testing.T, srv, cli *tls.Config) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			err = c.(*tls.Conn).Handshake()
			c.Close()
		}
		srvErr <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cli)
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	c.Close()
	if err := <-srvErr; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}

func TestRequestRefusesForeignCA(t *testing.T) {
	c, impostor := newCluster(t), newCluster(t)
	m := impostor.serve(t, nil, nil)

	_, err := noRetries(t).request(testContext(t), []string{m.addr}, c.token, nodeRequest)
	if err == nil {
		t.Fatal("Request succeeded against a server with another CA")
	}
	for _, want := range []string{m.addr, impostor.ca.Hash(), "the token pins " + c.token.CAHash, "is this the right cluster/token?"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if n := m.signs.Load(); n != 0 {
		t.Errorf("server received %d sign requests, want 0: the secret went to an unverified server", n)
	}
}

// A man in the middle serves the genuine CA followed by his own, hoping the
// client pins the first and trusts both.
func TestRequestTrustsOnlyThePinnedCA(t *testing.T) {
	c, mitm := newCluster(t), newCluster(t)
	genuine := Handler(c.ca, c.token, slog.New(slog.DiscardHandler))
	m := mitm.serve(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == caPath {
			w.Write(append(c.ca.CertPEM(), mitm.ca.CertPEM()...))
			return
		}
		genuine.ServeHTTP(w, r)
	}))

	_, err := noRetries(t).request(testContext(t), []string{m.addr}, c.token, nodeRequest)
	if err == nil || !strings.Contains(err.Error(), "not signed by it") {
		t.Errorf("Request through a man in the middle: err = %v, want a certificate verification refusal", err)
	}
	if n := m.signs.Load(); n != 0 {
		t.Errorf("man in the middle received %d sign requests (and the secret), want 0", n)
	}
}

func TestRequestWrongSecret(t *testing.T) {
	c := newCluster(t)
	m := c.serve(t, nil, nil)
	wrong := c.token
	wrong.Secret = strings.Repeat("0", 64)

	_, err := noRetries(t).request(testContext(t), []string{m.addr}, wrong, nodeRequest)
	if want := "join: " + m.addr + " refused the token's secret (wrong token?)"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
	if n := m.signs.Load(); n != 1 {
		t.Errorf("server received %d sign requests, want exactly 1", n)
	}
	if log := m.log.String(); !strings.Contains(log, "refused") || !strings.Contains(log, "127.0.0.1:") {
		t.Errorf("refusal not logged with the remote address; log:\n%s", log)
	}
}

func TestRequestTriesServersInOrder(t *testing.T) {
	c, other := newCluster(t), newCluster(t)
	foreign := other.serve(t, nil, nil) // a machine of another cluster, listed by mistake
	good := c.serve(t, nil, nil)

	if _, err := noRetries(t).request(testContext(t), []string{foreign.addr, good.addr}, c.token, nodeRequest); err != nil {
		t.Fatalf("Request: %v", err)
	}
	if foreign.signs.Load() != 0 || good.signs.Load() != 1 {
		t.Errorf("sign requests: foreign %d, good %d; want 0 and 1", foreign.signs.Load(), good.signs.Load())
	}
}

func TestRequestJoinsErrors(t *testing.T) {
	c, other := newCluster(t), newCluster(t)
	foreign := other.serve(t, nil, nil)
	// A member whose token was rotated: the same CA, another secret.
	rotated := (&cluster{ca: c.ca, token: pki.Token{CAHash: c.token.CAHash, Secret: strings.Repeat("1", 64)}}).serve(t, nil, nil)

	_, err := noRetries(t).request(testContext(t), []string{foreign.addr, rotated.addr}, c.token, nodeRequest)
	if err == nil {
		t.Fatal("Request succeeded")
	}
	for _, want := range []string{foreign.addr + " presented CA", rotated.addr + " refused the token's secret"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestRequestRejectsBadArguments(t *testing.T) {
	c := newCluster(t)
	if _, err := Request(testContext(t), nil, c.token, nodeRequest); err == nil {
		t.Error("Request with no servers succeeded")
	}
	if _, err := Request(testContext(t), []string{"127.0.0.1:1"}, pki.Token{}, nodeRequest); err == nil {
		t.Error("Request with an empty token succeeded")
	}
}

func TestHandlerRefusals(t *testing.T) {
	c := newCluster(t)
	m := c.serve(t, nil, nil)
	cfg, err := pki.ClientTLS(c.ca.CertPEM(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	t.Cleanup(client.CloseIdleConnections)

	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, nodeRequest)
	if err != nil {
		t.Fatal(err)
	}
	body := func(csr string) string {
		b, _ := json.Marshal(signRequest{CSR: csr})
		return string(b)
	}
	bearer := "Bearer " + c.token.Secret

	for _, tc := range []struct {
		name, method, path, auth, body string
		status                         int
	}{
		{"CA", "GET", caPath, "", "", http.StatusOK},
		{"sign", "POST", signPath, bearer, body(string(csr)), http.StatusOK},
		{"no secret", "POST", signPath, "", body(string(csr)), http.StatusUnauthorized},
		{"wrong secret", "POST", signPath, "Bearer " + strings.Repeat("0", 64), body(string(csr)), http.StatusUnauthorized},
		{"not JSON", "POST", signPath, bearer, "csr=...", http.StatusBadRequest},
		{"not a CSR", "POST", signPath, bearer, body("hello"), http.StatusBadRequest},
		{"wrong method", "GET", signPath, bearer, "", http.StatusNotFound},
		{"unknown path", "GET", "/v1/join/", "", "", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(testContext(t), tc.method, "https://"+m.addr+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.status, data)
			}
			if tc.status == http.StatusOK {
				return
			}
			var e errorResponse
			if err := json.Unmarshal(data, &e); err != nil || e.Error == "" {
				t.Errorf("refusal body %q is not JSON {\"error\": ...}", data)
			}
		})
	}
	// Each of the six refusals logged once.
	if n := strings.Count(m.log.String(), "refused request"); n != 6 {
		t.Errorf("%d refusals logged, want 6; log:\n%s", n, m.log.String())
	}
}
