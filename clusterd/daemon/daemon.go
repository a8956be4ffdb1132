// Package daemon is clusterd: the process that runs on every machine of a
// Corral cluster. It gets the node its certificate with the join token,
// brings up the store (an embedded etcd member or an etcd client), serves the
// join endpoint on members, and keeps the machine registered.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/bootstrap/join"
	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/clusterd/driver"
	"github.com/corral-dev/corral/clusterd/logship"
	"github.com/corral-dev/corral/clusterd/metrics"
	"github.com/corral-dev/corral/clusterd/overlay"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultAPIPort is clusterd's own HTTPS port: the join endpoint on
// members, the overlay self-test on every machine.
const DefaultAPIPort = 7379

// caKeyPath holds the cluster CA, sealed with the join token's secret, so
// every member can sign certificates for joining nodes (as k3s keeps its
// bootstrap data): reading it needs both a client certificate and the token.
const caKeyPath = "/corral/bootstrap/ca"

// Config is everything clusterd needs to start.
type Config struct {
	Name     string
	DataDir  string
	IP       net.IP
	Mode     store.Mode
	Servers  []string // IPs (or host:port) of the etcd members to join through
	Token    pki.Token
	CAFiles  pki.Files // init only: the cluster CA that provision made (CA = cert, Key = key)
	Metadata map[string]string
	TTL      time.Duration
	Quota    int64
	APIPort  int
	Version  string
	Log      *slog.Logger
	// Overlay settings; the overlay starts once provision has written the
	// network config, unless NoOverlay.
	Overlay   overlay.Config
	NoOverlay bool
	// Units: the driver ("exec", "systemd" or "" for the best available)
	// and how long a lost machine's units wait before they move.
	Driver string
	Grace  time.Duration
	// RestoreFrom, init only: an etcd snapshot the new cluster starts
	// from (backup.go); ignored once the data dir holds a member.
	RestoreFrom string
	// MetricsAddr is where /metrics is served (see metrics.Addr); "" for
	// nowhere.
	MetricsAddr string
	// AWS, when AWS.Bootstrap is set, discovers Name, IP, Mode, Servers,
	// Token and CAFiles on an EC2 instance (aws.go).
	AWS AWSConfig
}

// Node is a running clusterd.
type Node struct {
	cfg     Config
	Store   *store.Store
	Machine registry.Machine
	Overlay *overlay.Manager
	api     *http.Server
	mux     *http.ServeMux // the API's routes; a promoted client adds the join endpoint
	driver  driver.Driver
	// metrics are the node's /metrics (observe.go); stopMetrics stops
	// serving them.
	metrics     *metrics.Metrics
	stopMetrics context.CancelFunc
	// ship sends units' output and clusterd's log off the machine (logs.go).
	ship      *logship.Shipper
	shipUnits *logship.Units
}

func (c *Config) nodeFiles() pki.Files {
	dir := filepath.Join(c.DataDir, "pki")
	return pki.Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "node.crt"), Key: filepath.Join(dir, "node.key")}
}

// serverAddrs turns --servers entries into host:port for the given port.
func serverAddrs(servers []string, port int) []string {
	out := make([]string, 0, len(servers))
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err == nil {
			out = append(out, s)
			continue
		}
		out = append(out, net.JoinHostPort(s, strconv.Itoa(port)))
	}
	return out
}

func hostsOf(servers []string) []net.IP {
	var out []net.IP
	for _, s := range servers {
		h := s
		if hh, _, err := net.SplitHostPort(s); err == nil {
			h = hh
		}
		if ip := net.ParseIP(h); ip != nil {
			out = append(out, ip)
		}
	}
	return out
}

// Start brings the node up and returns once it is registered.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.AWS.Bootstrap != "" {
		if err := cfg.awsBootstrap(ctx); err != nil {
			return nil, err
		}
	}
	if cfg.APIPort == 0 {
		cfg.APIPort = DefaultAPIPort
	}
	if cfg.Name == "" || cfg.DataDir == "" || cfg.IP == nil {
		return nil, errors.New("clusterd: --name, --data-dir and --ip are required")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	id, err := registry.MachineID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg}
	n.newShipper(id)
	cfg = n.cfg // its Log now also ships
	files := cfg.nodeFiles()
	ca, err := cfg.certificates(ctx, files)
	if err != nil {
		return nil, err
	}
	restored, err := cfg.restoreSnapshot()
	if err != nil {
		return nil, err
	}
	var members []string
	for _, ip := range hostsOf(cfg.Servers) {
		members = append(members, store.ClientURL(ip, 0))
	}
	st, err := store.Start(ctx, store.Config{
		Name: cfg.Name, DataDir: cfg.DataDir, IP: cfg.IP, Mode: cfg.Mode,
		Members: members, TLS: files, ClusterID: cfg.Token.CAHash, Quota: cfg.Quota, Log: cfg.Log,
	})
	if err != nil {
		return nil, err
	}
	n.Store = st
	if restored {
		if err := n.dropRestoredLeases(ctx); err != nil {
			st.Close()
			return nil, err
		}
	}
	if !cfg.NoOverlay {
		oc := cfg.Overlay
		oc.MachineID, oc.PublicIP, oc.Log = id, ipAddr(cfg.IP), cfg.Log
		n.Overlay = overlay.New(st.Client, oc)
	}
	if err := unitEnvironment(cfg.DataDir); err != nil {
		st.Close()
		return nil, err
	}
	if n.driver, err = n.newDriver(); err != nil {
		st.Close()
		return nil, err
	}
	if err := n.serveAPI(ctx, ca, files); err != nil {
		st.Close()
		return nil, err
	}
	if err := writeClientEnv(cfg.DataDir, files, st.Client.Endpoints()); err != nil {
		n.Close()
		return nil, err
	}
	if err := n.listenUnits(id); err != nil {
		n.Close()
		return nil, err
	}

	host, _ := os.Hostname()
	n.Machine = registry.Machine{
		ID: id, Name: cfg.Name, IP: cfg.IP.String(), Hostname: host, Metadata: cfg.Metadata,
		Member: st.IsMember(), Version: cfg.Version, Started: time.Now().UTC(),
	}
	if err := n.startMetrics(); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// certificates makes sure the node has its certificate. The init node signs
// its own with the CA that provision handed it; everyone else asks a member
// through the join endpoint with the token. It returns the CA when the node
// holds its key (init), else nil.
func (c *Config) certificates(ctx context.Context, files pki.Files) (*pki.CA, error) {
	var ca *pki.CA
	if c.CAFiles.Key != "" {
		certPEM, err := os.ReadFile(c.CAFiles.CA)
		if err != nil {
			return nil, err
		}
		keyPEM, err := os.ReadFile(c.CAFiles.Key)
		if err != nil {
			return nil, err
		}
		if ca, err = pki.ParseCA(certPEM, keyPEM); err != nil {
			return nil, err
		}
		if got := ca.Hash(); got != c.Token.CAHash {
			return nil, fmt.Errorf("clusterd: the CA in %s is %s but the token pins %s", c.CAFiles.CA, got, c.Token.CAHash)
		}
	}
	if _, _, _, err := files.Read(); err == nil {
		return ca, nil // issued on an earlier start
	}
	req := pki.CertRequest{CommonName: c.Name, IPs: []net.IP{c.IP}, DNSNames: []string{c.Name}}
	if ca != nil {
		cert, key, err := ca.Issue(req, pki.DefaultValidity)
		if err != nil {
			return nil, err
		}
		return ca, files.Write(ca.CertPEM(), cert, key)
	}
	if len(c.Servers) == 0 {
		return nil, errors.New("clusterd: no certificate yet and no --servers to join through")
	}
	c.Log.Info("requesting a certificate with the join token", "servers", c.Servers)
	m, err := join.Request(ctx, serverAddrs(c.Servers, c.APIPort), c.Token, req)
	if err != nil {
		return nil, err
	}
	return nil, files.Write(m.CA, m.Cert, m.Key)
}

// serveAPI serves clusterd's HTTPS API: the overlay self-test on every
// machine, and on members the join endpoint, so any member can admit nodes.
func (n *Node) serveAPI(ctx context.Context, ca *pki.CA, files pki.Files) error {
	mux := http.NewServeMux()
	n.mux = mux
	if n.Store.IsMember() {
		var err error
		if ca, err = n.sharedCA(ctx, ca); err != nil {
			return err
		}
		mux.Handle("/v1/join/", join.Handler(ca, n.cfg.Token, n.cfg.Log))
	}
	if n.Overlay != nil {
		mux.Handle("/v1/net/check", requireClientCert(http.HandlerFunc(n.netCheck)))
	}
	mux.Handle("/v1/units/journal", requireClientCert(http.HandlerFunc(n.unitJournal)))
	caPEM, certPEM, keyPEM, err := files.Read()
	if err != nil {
		return err
	}
	// Client certificates are optional at the TLS layer only because a
	// joining node has none yet; every other handler requires one.
	tlsConf, err := pki.ServerTLS(caPEM, certPEM, keyPEM, false)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(n.cfg.IP.String(), strconv.Itoa(n.cfg.APIPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("clusterd: API: %w", err)
	}
	n.api = &http.Server{Handler: mux, TLSConfig: tlsConf, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(n.cfg.Log.Handler(), slog.LevelDebug)}
	go n.api.ServeTLS(ln, "", "")
	n.cfg.Log.Info("serving the API", "addr", addr, "join", n.Store.IsMember())
	return nil
}

// sharedCA publishes (on init) or fetches (on a joined member) the sealed CA.
func (n *Node) sharedCA(ctx context.Context, ca *pki.CA) (*pki.CA, error) {
	c := n.Store.Client
	if ca != nil {
		sealed, err := seal(ca, n.cfg.Token)
		if err != nil {
			return nil, err
		}
		// Only the first writer's copy counts; a restarted init node finds it.
		// A copy that this token can't open, or that holds another CA, came
		// from a restored snapshot of another cluster: the CA this node
		// holds (pinned by the token) replaces it.
		resp, err := c.Get(ctx, caKeyPath)
		if err != nil {
			return nil, fmt.Errorf("clusterd: reading the sealed CA: %w", err)
		}
		cmp := clientv3.Compare(clientv3.CreateRevision(caKeyPath), "=", 0)
		if len(resp.Kvs) > 0 {
			if old, err := unseal(resp.Kvs[0].Value, n.cfg.Token); err == nil && old.Hash() == ca.Hash() {
				return ca, nil
			}
			cmp = clientv3.Compare(clientv3.ModRevision(caKeyPath), "=", resp.Kvs[0].ModRevision)
		}
		if _, err := c.Txn(ctx).If(cmp).Then(clientv3.OpPut(caKeyPath, string(sealed))).Commit(); err != nil {
			return nil, fmt.Errorf("clusterd: publishing the sealed CA: %w", err)
		}
		return ca, nil
	}
	resp, err := c.Get(ctx, caKeyPath)
	if err != nil {
		return nil, fmt.Errorf("clusterd: reading the sealed CA: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, errors.New("clusterd: the cluster has no sealed CA at " + caKeyPath)
	}
	return unseal(resp.Kvs[0].Value, n.cfg.Token)
}

// ClientEnvFile is where a node leaves the settings clusterctl uses on it.
const ClientEnvFile = "clusterctl.env"

// writeClientEnv lets clusterctl on the node work without any flags.
func writeClientEnv(dir string, files pki.Files, endpoints []string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "ETCDCTL_ENDPOINTS=%s\n", strings.Join(endpoints, ","))
	fmt.Fprintf(&b, "ETCDCTL_CACERT=%s\nETCDCTL_CERT=%s\nETCDCTL_KEY=%s\n", files.CA, files.Cert, files.Key)
	return os.WriteFile(filepath.Join(dir, ClientEnvFile), []byte(b.String()), 0o600)
}

// Run keeps the machine registered until ctx ends or the store stops.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hb := &registry.Heartbeat{Client: n.Store.Client, Machine: n.Machine, TTL: n.cfg.TTL, Log: n.cfg.Log}
	done := make(chan error, 1)
	go func() { done <- hb.Run(ctx) }()
	overlayDone := make(chan struct{})
	go func() {
		defer close(overlayDone)
		if n.Overlay == nil {
			return
		}
		// The overlay failing is logged, not fatal: the machine still
		// serves etcd and its registration. It starts again after a pause
		// (a changed network config, say, needs a fresh start).
		for ctx.Err() == nil {
			if err := n.Overlay.Run(ctx); err != nil {
				n.cfg.Log.Error("overlay stopped; restarting it", "err", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}()
	// Stopping waits for the overlay too: with --cleanup it is removing
	// its devices and rules.
	defer func() { cancel(); <-overlayDone }()
	go logship.Watch(ctx, n.Store.Client, n.ship, n.cfg.Log)
	go n.runUnits(ctx)
	go n.runDeployHook(ctx)
	go n.runBackups(ctx)
	removed := make(chan error, 1)
	go n.runMembership(ctx, removed)
	n.cfg.Log.Info("registering machine", "id", n.Machine.ID, "member", n.Machine.Member)
	select {
	case <-ctx.Done():
		return <-done
	case err := <-removed:
		cancel()
		<-done
		return err
	case <-n.Store.Done():
		cancel()
		<-done
		return errors.New("clusterd: the embedded etcd server stopped (was this member removed?)")
	}
}

// Close stops serving and leaves the store.
func (n *Node) Close() error {
	n.closeShipping()
	if n.api != nil {
		n.api.Close()
	}
	if n.stopMetrics != nil {
		n.stopMetrics()
	}
	return n.Store.Close()
}
