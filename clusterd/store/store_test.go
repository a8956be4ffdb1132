package store_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/clusterd/store"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// testCluster issues certificates for nodes on distinct loopback addresses
// (Linux routes all of 127/8 to lo), so members keep etcd's default ports.
type testCluster struct {
	t    *testing.T
	ca   *pki.CA
	base int
}

func newTestCluster(t *testing.T, base int) *testCluster {
	ca, err := pki.NewCA("store-test")
	if err != nil {
		t.Fatal(err)
	}
	return &testCluster{t: t, ca: ca, base: base}
}

func (tc *testCluster) ip(i int) net.IP { return net.IPv4(127, 0, byte(tc.base), byte(i)) }

func (tc *testCluster) config(i int, mode store.Mode, dir string, members ...int) store.Config {
	tc.t.Helper()
	name := fmt.Sprintf("n%d", i)
	files := pki.Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "n.crt"), Key: filepath.Join(dir, "n.key")}
	if _, _, _, err := files.Read(); err != nil {
		cert, key, err := tc.ca.Issue(pki.CertRequest{CommonName: name, IPs: []net.IP{tc.ip(i)}}, time.Hour)
		if err != nil {
			tc.t.Fatal(err)
		}
		if err := files.Write(tc.ca.CertPEM(), cert, key); err != nil {
			tc.t.Fatal(err)
		}
	}
	var urls []string
	for _, m := range members {
		urls = append(urls, store.ClientURL(tc.ip(m), 0))
	}
	return store.Config{
		Name: name, DataDir: dir, IP: tc.ip(i), Mode: mode, Members: urls, TLS: files,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func start(t *testing.T, cfg store.Config) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := store.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("%s: %v", cfg.Name, err)
	}
	return s
}

func voters(t *testing.T, c *clientv3.Client) (voters, learners int) {
	t.Helper()
	list, err := c.MemberList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list.Members {
		if m.IsLearner {
			learners++
		} else {
			voters++
		}
	}
	return
}

// Two members join at the same moment, a client connects at the same moment,
// and all end up where they should; then a member restarted with its data
// comes back as the same member with the data.
func TestConcurrentJoinsAndRestart(t *testing.T) {
	tc := newTestCluster(t, 91)
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()}
	first := start(t, tc.config(1, store.ModeInit, dirs[0]))
	defer func() { first.Close() }()

	var wg sync.WaitGroup
	stores := make([]*store.Store, 4)
	errs := make([]error, 4)
	for i := 2; i <= 4; i++ {
		mode := store.ModeJoin
		if i == 4 {
			mode = store.ModeClient
		}
		cfg := tc.config(i, mode, dirs[i-1], 1, 2, 3)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			stores[i-1], errs[i-1] = store.Start(ctx, cfg)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
	}
	defer func() {
		for _, s := range stores[1:] {
			s.Close()
		}
	}()
	if v, l := voters(t, first.Client); v != 3 || l != 0 {
		t.Fatalf("want 3 voters and no learners, got %d voters, %d learners", v, l)
	}
	if stores[3].IsMember() || !stores[1].IsMember() {
		t.Fatalf("client/member roles wrong: client member=%v, join member=%v", stores[3].IsMember(), stores[1].IsMember())
	}
	ctx := context.Background()
	if _, err := stores[3].Client.Put(ctx, "/k", "from-client"); err != nil {
		t.Fatal(err)
	}

	// Restart member 2 with its data dir, even with the wrong mode.
	id := stores[1].MemberID()
	stores[1].Close()
	if _, err := first.Client.Put(ctx, "/while-away", "yes"); err != nil {
		t.Fatalf("two of three members must keep serving writes: %v", err)
	}
	stores[1] = start(t, tc.config(2, store.ModeInit, dirs[1], 1, 2, 3))
	if got := stores[1].MemberID(); got != id {
		t.Fatalf("restarted member has id %x, want %x", got, id)
	}
	// Read from the restarted member alone, serializably: its own copy.
	local, err := store.Connect(ctx, tc.config(2, store.ModeJoin, dirs[1]).TLS, []string{store.ClientURL(tc.ip(2), 0)})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	resp, err := local.Get(ctx, "/while-away") // linearizable: it caught up
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "yes" {
		t.Fatalf("restarted member lacks the write made while it was away: %v %v", resp, err)
	}
	if v, _ := voters(t, first.Client); v != 3 {
		t.Fatalf("after restart: %d voters, want 3", v)
	}
}

// No listener accepts a client without a certificate from the cluster CA.
func TestClientWithoutCertificateIsRefused(t *testing.T) {
	tc := newTestCluster(t, 92)
	dir := t.TempDir()
	s := start(t, tc.config(1, store.ModeInit, dir))
	defer s.Close()
	if _, err := s.Client.Put(context.Background(), "/secret", "x"); err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("intruder")
	if err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey, err := other.Issue(pki.CertRequest{CommonName: "intruder"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][2][]byte{
		"no certificate":            {nil, nil},
		"certificate of another CA": {otherCert, otherKey},
	}
	for name, kp := range cases {
		t.Run(name, func(t *testing.T) {
			conf, err := pki.ClientTLS(tc.ca.CertPEM(), kp[0], kp[1])
			if err != nil {
				t.Fatal(err)
			}
			for _, port := range []int{store.DefaultClientPort, store.DefaultPeerPort} {
				if err := tryRead(tc.ip(1), port, conf); err == nil {
					t.Fatalf("port %d served a client with %s", port, name)
				}
			}
		})
	}
}

// tryRead reads a key through etcd's client API on the given port.
func tryRead(ip net.IP, port int, conf *tls.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := clientv3.New(clientv3.Config{
		Endpoints: []string{fmt.Sprintf("https://%s:%d", ip, port)}, TLS: conf,
		DialTimeout: 2 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Get(ctx, "/secret")
	return err
}

// Errors a member answers while it is removed or a leader changes are
// retried; others are not.
func TestTransient(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unknown, "raft: stopped"), true}, // a removed member, shutting down
		{status.Error(codes.Unavailable, "connection refused"), true},
		{rpctypes.ErrLeaderChanged, true},
		{status.Error(codes.Unknown, "etcdserver: key not found"), false},
		{status.Error(codes.PermissionDenied, "etcdserver: permission denied"), false},
		{fmt.Errorf("plain"), false},
	} {
		if got := store.Transient(c.err); got != c.want {
			t.Errorf("Transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
