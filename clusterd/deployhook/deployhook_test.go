package deployhook

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const testSecret = "0123456789abcdef-test-secret"

// machine is one clusterd's hook: a real HTTPS server with a certificate
// from a real cluster CA, on its own loopback address.
type machine struct {
	url string
}

// startMachines runs n hook servers against one etcd, with the settings
// written as provision writes them, and an HTTPS client that trusts the CA.
func startMachines(t *testing.T, cli *clientv3.Client, n int) ([]machine, *http.Client) {
	t.Helper()
	ca, err := pki.NewCA("hooktest")
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	set, _ := json.Marshal(Settings{Key: DefaultKey, Port: port, Secret: testSecret})
	if _, err := cli.Put(context.Background(), SettingsKey, string(set)); err != nil {
		t.Fatal(err)
	}
	var ms []machine
	for i := range n {
		ip := net.IPv4(127, 0, 0, byte(2+i))
		cert, key, err := ca.Issue(pki.CertRequest{CommonName: "node", IPs: []net.IP{ip}}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		tlsConf, err := pki.ServerTLS(ca.CertPEM(), cert, key, false)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		s := &Server{Client: cli, IP: ip, TLS: tlsConf}
		go func() { defer close(done); s.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		ms = append(ms, machine{url: "https://" + net.JoinHostPort(ip.String(), strconv.Itoa(port)) + Path})
	}
	clientTLS, err := pki.ClientTLS(ca.CertPEM(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}, Timeout: 10 * time.Second}
	// The servers listen once they have read the settings: wait for each
	// to answer (an unsigned request is refused, and changes nothing).
	for _, m := range ms {
		waitServing(t, hc, m.url)
	}
	return ms, hc
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitServing(t *testing.T, hc *http.Client, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Post(url, "application/json", strings.NewReader("{}"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("unsigned request to %s: got %s, want 401", url, resp.Status)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond) // polling a port with a deadline: no event to await
	}
}

// keyRev is the deploy key's modification revision (0: absent).
func keyRev(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), DefaultKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return 0
	}
	return resp.Kvs[0].ModRevision
}

func send(t *testing.T, hc *http.Client, req *http.Request) (int, string) {
	t.Helper()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

func TestDeploy(t *testing.T) {
	cli := etcdtest.Start(t)
	ms, hc := startMachines(t, cli, 2)
	ctx := context.Background()

	body := []byte(`{"image":"v2"}`)
	req, err := NewRequest(ctx, ms[0].url, testSecret, body, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	replay := req.Clone(ctx)
	res, err := Do(hc, req)
	if err != nil {
		t.Fatalf("signed request: %v", err)
	}
	got, err := cli.Get(ctx, DefaultKey)
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != string(body) {
		t.Fatalf("after a signed deploy the key holds %v (err %v), want %s", got.Kvs, err, body)
	}
	if res.Revision != got.Kvs[0].ModRevision || res.Key != DefaultKey {
		t.Fatalf("result %+v, want key %s at revision %d", res, DefaultKey, got.Kvs[0].ModRevision)
	}
	rev := keyRev(t, cli)

	signed := func(url string, body []byte, at time.Time, mutate func(*http.Request)) *http.Request {
		req, err := NewRequest(ctx, url, testSecret, body, at)
		if err != nil {
			t.Fatal(err)
		}
		if mutate != nil {
			mutate(req)
		}
		return req
	}
	cases := []struct {
		name   string
		req    *http.Request
		status int
		reason string
	}{
		{"wrong signature", signed(ms[0].url, body, time.Now(), func(r *http.Request) {
			r.Header.Set(SignatureHeader, Sign("another-secret-of-enough-length", r.Header.Get(TimestampHeader), r.Header.Get(NonceHeader), body))
		}), http.StatusUnauthorized, "does not match"},
		{"no signature", signed(ms[0].url, body, time.Now(), func(r *http.Request) { r.Header.Del(SignatureHeader) }), http.StatusUnauthorized, "does not match"},
		{"old timestamp", signed(ms[0].url, body, time.Now().Add(-Window-time.Minute), nil), http.StatusUnauthorized, "from this machine's clock"},
		{"future timestamp", signed(ms[1].url, body, time.Now().Add(Window+time.Minute), nil), http.StatusUnauthorized, "from this machine's clock"},
		{"replayed nonce, same machine", replay, http.StatusUnauthorized, "used before"},
		{"replayed nonce, other machine", func() *http.Request {
			r := replay.Clone(ctx)
			r.URL.Host = strings.TrimPrefix(strings.TrimSuffix(ms[1].url, Path), "https://")
			r.Host = ""
			return r
		}(), http.StatusUnauthorized, "used before"},
		{"not JSON", signed(ms[1].url, []byte("image=v3"), time.Now(), nil), http.StatusBadRequest, "not JSON"},
		{"bad nonce", signed(ms[1].url, body, time.Now(), func(r *http.Request) { r.Header.Set(NonceHeader, "../x") }), http.StatusUnauthorized, "Nonce"},
	}
	for _, c := range cases {
		// A cloned request's body was read by the first send: give it
		// the original bytes again.
		if c.req.GetBody != nil {
			c.req.Body, _ = c.req.GetBody()
		}
		status, answer := send(t, hc, c.req)
		if status != c.status || !strings.Contains(answer, c.reason) {
			t.Errorf("%s: got %d %s, want %d mentioning %q", c.name, status, answer, c.status, c.reason)
		}
		if now := keyRev(t, cli); now != rev {
			t.Errorf("%s: the key changed (revision %d → %d)", c.name, rev, now)
		}
	}

	// The other machine accepts a fresh request too.
	if _, err := Do(hc, signed(ms[1].url, []byte(`{"image":"v3"}`), time.Now(), nil)); err != nil {
		t.Fatalf("signed request to the second machine: %v", err)
	}
	if keyRev(t, cli) == rev {
		t.Fatal("a signed request to the second machine did not change the key")
	}
}

// TestSettingsOff checks that deleting the settings turns the hook off on
// every machine: a signed request then fails and changes nothing.
func TestSettingsOff(t *testing.T) {
	cli := etcdtest.Start(t)
	ms, hc := startMachines(t, cli, 1)
	ctx := context.Background()
	if _, err := cli.Delete(ctx, SettingsKey); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, _ := NewRequest(ctx, ms[0].url, testSecret, []byte(`{}`), time.Now())
		_, err := Do(hc, req)
		if err != nil {
			break // refused, or no longer listening
		}
		if time.Now().After(deadline) {
			t.Fatal("the hook still accepts deploys after its settings were deleted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	rev := keyRev(t, cli)
	req, _ := NewRequest(ctx, ms[0].url, testSecret, []byte(`{"x":1}`), time.Now())
	if _, err := Do(hc, req); err == nil {
		t.Fatal("a deploy succeeded with the hook off")
	}
	if keyRev(t, cli) != rev {
		t.Fatal("the key changed with the hook off")
	}
}

func TestValidate(t *testing.T) {
	ok := Settings{Key: DefaultKey, Port: DefaultPort, Secret: testSecret}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		s    Settings
		want string
	}{
		{Settings{Key: "coreos.com/deploy", Port: 1, Secret: testSecret}, "absolute"},
		{Settings{Key: "/corral/units/x", Port: 1, Secret: testSecret}, "cluster's own"},
		{Settings{Key: DefaultKey, Port: 70000, Secret: testSecret}, "port"},
		{Settings{Key: DefaultKey, Port: 1, Secret: "short"}, "too short"},
	} {
		if err := c.s.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want an error mentioning %q", c.s, err, c.want)
		}
	}
}
