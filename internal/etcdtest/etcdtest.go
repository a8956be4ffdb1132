// Package etcdtest starts a throwaway etcd server for tests of the packages
// that sit above the store.
//
// The server speaks plaintext on loopback. That is acceptable only because it
// is test infrastructure: the product itself is TLS-only, with every peer and
// client connection mutually authenticated.
package etcdtest

import (
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// startTimeout bounds how long Start waits for the member to become ready;
// a single member elects itself in well under a second, so hitting it means
// something is broken rather than slow.
const startTimeout = 30 * time.Second

// Start runs a single-member embedded etcd in t.TempDir(), listening on free
// loopback ports, and returns a client connected to it. The client and the
// server are closed when the test ends. Errors logged by either go to t.Log,
// so they show only when the test fails.
func Start(t testing.TB) *clientv3.Client {
	t.Helper()
	logs := &logWriter{t: t}
	logger := zap.New(zapcore.NewCore(
		zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.AddSync(logs),
		zap.ErrorLevel,
	))

	// Port 0 lets the kernel pick free ports; the listeners (e.Clients) then
	// report the real addresses. Nothing dials the advertised peer URL in a
	// one-member cluster, so advertising port 0 there is harmless.
	loopback := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg := embed.NewConfig()
	cfg.Name = "etcdtest"
	cfg.Dir = t.TempDir()
	cfg.ListenPeerUrls = []url.URL{loopback}
	cfg.AdvertisePeerUrls = []url.URL{loopback}
	cfg.ListenClientUrls = []url.URL{loopback}
	cfg.AdvertiseClientUrls = []url.URL{loopback}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(logger)
	// The data dir is thrown away with the test, so durability buys nothing
	// and fsync only slows every write down.
	cfg.UnsafeNoFsync = true

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("etcdtest: start etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		t.Fatalf("etcdtest: etcd failed: %v", err)
	case <-time.After(startTimeout):
		e.Close()
		t.Fatalf("etcdtest: etcd not ready after %v", startTimeout)
	}

	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"http://" + e.Clients[0].Addr().String()},
		DialTimeout: 5 * time.Second,
		Logger:      logger,
	})
	if err != nil {
		e.Close()
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() {
		logs.stop()
		c.Close()
		e.Close()
	})
	return c
}

// logWriter passes log lines to t.Log until stopped. It is stopped before
// shutdown because etcd logs its listeners closing as errors, and because
// t.Log panics once the test is over while etcd's goroutines may still log.
type logWriter struct {
	mu      sync.Mutex
	t       testing.TB
	stopped bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *logWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
}
