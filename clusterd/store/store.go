// Package store runs a node's view of the cluster's etcd: the real etcd server
// embedded in clusterd for the voting members, or just a client for the rest.
//
// A node starts in one of three modes. ModeInit bootstraps a new one-member
// cluster. ModeJoin adds the node as a learner through an existing member,
// starts etcd, and promotes it to a voter once it has caught up; joins are
// serialised by a lock in etcd, so concurrent joins never trip etcd's limit of
// one learner at a time. ModeClient runs no etcd at all and talks to the
// members. In every mode all traffic, peer and client, is mutual TLS with
// certificates from the cluster CA; there is no plaintext listener.
//
// A node restarted with its data directory comes back as the same member,
// whatever mode it is given: etcd's write-ahead log knows who it is.
package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/bootstrap/pki"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Mode says how a node takes part in the cluster's etcd.
type Mode string

// The three ways a node can start.
const (
	ModeInit   Mode = "init"   // first member of a new cluster
	ModeJoin   Mode = "join"   // a new voting member of an existing cluster
	ModeClient Mode = "client" // no etcd member; uses the members' endpoints
)

// ParseMode checks a mode given on the command line.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeInit, ModeJoin, ModeClient:
		return m, nil
	}
	return "", fmt.Errorf("unknown store mode %q: want init, join or client", s)
}

// Default ports, as etcd's own.
const (
	DefaultClientPort = 2379
	DefaultPeerPort   = 2380
)

// DefaultQuota is the etcd backend quota: etcd's own default of 2 GiB.
const DefaultQuota = 2 << 30

// joinLockKey serialises membership changes made by joining nodes.
const joinLockKey = "/corral/store/join-lock"

// Config describes the node's place in the cluster.
type Config struct {
	Name    string    // the node's name; also its etcd member name
	DataDir string    // etcd's data lives in DataDir/etcd
	IP      net.IP    // the address peers and clients use to reach this node
	Mode    Mode      // how to start when the data dir holds no etcd data yet
	Members []string  // client URLs of existing members (join and client modes)
	TLS     pki.Files // the node's certificate, used for every connection
	// ClusterID makes etcd's cluster and member ids unique to this cluster
	// (etcd's initial-cluster-token); the CA's hash is a good one.
	ClusterID string

	ClientPort, PeerPort int   // default 2379 and 2380
	Quota                int64 // backend quota in bytes; default DefaultQuota
	Log                  *slog.Logger
	// JoinIf, if set, runs while a join holds the cluster's join lock,
	// before the learner is added: an error stops the join. A promotion
	// uses it to check, race-free, that a voter is still wanted.
	JoinIf func(context.Context, *clientv3.Client) error
}

// Store is a running node's handle on the cluster's etcd.
type Store struct {
	// Client talks to the cluster; on a member it prefers the local server.
	Client *clientv3.Client
	log    *slog.Logger
	cfg    Config
	// mu guards etcd, which Promote sets on a running client.
	mu   sync.Mutex
	etcd *embed.Etcd
}

// ClientURL is the https URL of ip's etcd client port.
func ClientURL(ip net.IP, port int) string {
	if port == 0 {
		port = DefaultClientPort
	}
	return "https://" + net.JoinHostPort(ip.String(), strconv.Itoa(port))
}

func (c *Config) setDefaults() {
	if c.ClientPort == 0 {
		c.ClientPort = DefaultClientPort
	}
	if c.PeerPort == 0 {
		c.PeerPort = DefaultPeerPort
	}
	if c.Quota == 0 {
		c.Quota = DefaultQuota
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

func (c *Config) etcdDir() string { return filepath.Join(c.DataDir, "etcd") }

func (c *Config) peerURL() string {
	return "https://" + net.JoinHostPort(c.IP.String(), strconv.Itoa(c.PeerPort))
}

// HasData reports whether dataDir already holds an etcd member's data.
func HasData(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, "etcd", "member", "wal"))
	return err == nil
}

// Start brings the node into the cluster and returns once it can serve.
func Start(ctx context.Context, cfg Config) (*Store, error) {
	cfg.setDefaults()
	if cfg.IP == nil {
		return nil, errors.New("store: the node's IP address is required")
	}
	restart := HasData(cfg.DataDir)
	var s *Store
	var err error
	switch {
	case cfg.Mode == ModeClient && !restart:
		return startClient(ctx, cfg)
	case restart:
		cfg.Log.Info("restarting etcd member from its data", "dir", cfg.etcdDir())
		s, err = startMember(ctx, cfg, "existing", cfg.Name+"="+cfg.peerURL())
	case cfg.Mode == ModeInit:
		cfg.Log.Info("initialising a new etcd cluster", "member", cfg.Name)
		s, err = startMember(ctx, cfg, "new", cfg.Name+"="+cfg.peerURL())
	case cfg.Mode == ModeJoin:
		s, err = join(ctx, cfg)
	default:
		return nil, fmt.Errorf("store: unknown mode %q", cfg.Mode)
	}
	if err != nil {
		return nil, err
	}
	if err := Ready(ctx, s.Client); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Connect returns a client for endpoints that authenticates with the
// certificate in files: the one way anything in Corral talks to etcd.
func Connect(ctx context.Context, files pki.Files, endpoints []string) (*clientv3.Client, error) {
	caPEM, certPEM, keyPEM, err := files.Read()
	if err != nil {
		return nil, err
	}
	tlsConf, err := pki.ClientTLS(caPEM, certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         tlsConf,
		DialTimeout: 5 * time.Second,
		// Find a member that went silent (a partition drops packets, it
		// doesn't close connections) within seconds, and move to another.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		AutoSyncInterval:     30 * time.Second, // follow members added later
		Context:              ctx,
		Logger:               zap.NewNop(),
	})
}

func startClient(ctx context.Context, cfg Config) (*Store, error) {
	if len(cfg.Members) == 0 {
		return nil, errors.New("store: client mode needs the members' endpoints")
	}
	c, err := Connect(context.WithoutCancel(ctx), cfg.TLS, cfg.Members)
	if err != nil {
		return nil, fmt.Errorf("store: connecting to %s: %w", strings.Join(cfg.Members, ","), err)
	}
	// A client is ready when the cluster answers it; until then keep trying,
	// since the members may be starting at the same moment.
	if err := Ready(ctx, c); err != nil {
		c.Close()
		return nil, err
	}
	cfg.Log.Info("connected to the cluster as a client", "members", cfg.Members)
	return &Store{Client: c, log: cfg.Log, cfg: cfg}, nil
}

// Ready retries until the cluster serves a linearizable read, then
// points the client at the started voting members only: a learner refuses
// everything but serializable reads ("rpc not supported for learner"), and
// a node that is joining right now is one.
func Ready(ctx context.Context, c *clientv3.Client) error {
	return retry(ctx, func() error {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if _, err := c.Get(rctx, "/corral/store/ping"); err != nil {
			return err
		}
		list, err := c.MemberList(rctx)
		if err != nil {
			return err
		}
		var voters []string
		for _, m := range list.Members {
			if !m.IsLearner && m.Name != "" {
				voters = append(voters, m.ClientURLs...)
			}
		}
		if len(voters) > 0 {
			c.SetEndpoints(voters...)
		}
		return nil
	}, func(error) bool { return true })
}

// Retry runs fn with capped exponential backoff until it succeeds, fails
// with an error that is not Transient, or ctx ends.
func Retry(ctx context.Context, fn func() error) error { return retry(ctx, fn, Transient) }

// Transient reports whether err is one etcd returns while its leadership
// or membership changes (a member was just removed, a new leader is being
// elected), which the same request gets past a moment later.
func Transient(err error) bool {
	for _, e := range []error{rpctypes.ErrLeaderChanged, rpctypes.ErrNoLeader, rpctypes.ErrTimeout,
		rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost, rpctypes.ErrStopped, rpctypes.ErrGRPCStopped,
		rpctypes.ErrUnhealthy} {
		if errors.Is(err, e) {
			return true
		}
	}
	// A member just removed answers until it has shut down, with raft's
	// own error, which gRPC carries as Unknown; the next attempt goes to
	// another endpoint.
	return status.Code(err) == codes.Unavailable || status.Convert(err).Message() == raftStopped
}

// raftStopped is go.etcd.io/raft's ErrStopped, as a stopping member's
// answers carry it.
const raftStopped = "raft: stopped"

// retry runs fn with capped exponential backoff until it succeeds, fails
// with an error transient doesn't accept, or ctx ends.
func retry(ctx context.Context, fn func() error, transient func(error) bool) error {
	wait := 50 * time.Millisecond
	for {
		err := fn()
		if err == nil || !transient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(wait*2, time.Second)
	}
}

// join adds this node as a learner through the existing members, starts
// etcd, and promotes it. The whole sequence holds the cluster's join lock:
// etcd allows one learner at a time, and a half-finished join left by a node
// that crashed must be seen and repaired by the next one, not raced.
func join(ctx context.Context, cfg Config) (*Store, error) {
	if len(cfg.Members) == 0 {
		return nil, errors.New("store: join mode needs the members' endpoints")
	}
	c, err := Connect(context.WithoutCancel(ctx), cfg.TLS, cfg.Members)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := Ready(ctx, c); err != nil {
		return nil, fmt.Errorf("store: no member answered at %s: %w", strings.Join(cfg.Members, ","), err)
	}
	sess, err := concurrency.NewSession(c, concurrency.WithTTL(10))
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	lock := concurrency.NewMutex(sess, joinLockKey)
	cfg.Log.Info("waiting for the join lock")
	if err := lock.Lock(ctx); err != nil {
		return nil, fmt.Errorf("store: taking the join lock: %w", err)
	}
	defer lock.Unlock(context.WithoutCancel(ctx))
	if cfg.JoinIf != nil {
		if err := cfg.JoinIf(ctx, c); err != nil {
			return nil, err
		}
	}

	id, initial, err := addLearner(ctx, c, cfg)
	if err != nil {
		return nil, err
	}
	cfg.Log.Info("added as a learner", "member", fmt.Sprintf("%x", id))
	s, err := startMember(ctx, cfg, "existing", initial)
	if err != nil {
		return nil, err
	}
	if err := promote(ctx, c, id); err != nil {
		s.Close()
		return nil, err
	}
	cfg.Log.Info("promoted to voting member", "member", fmt.Sprintf("%x", id))
	return s, nil
}

// addLearner makes sure the cluster has exactly one learner slot for this
// node and returns its id and the initial-cluster string to start etcd with.
func addLearner(ctx context.Context, c *clientv3.Client, cfg Config) (uint64, string, error) {
	me := cfg.peerURL()
	list, err := c.MemberList(ctx)
	if err != nil {
		return 0, "", err
	}
	var id uint64
	for _, m := range list.Members {
		switch {
		case hasURL(m.PeerURLs, me) && m.Name == "":
			id = m.ID // our own earlier attempt that never started: reuse it
		case hasURL(m.PeerURLs, me):
			// A started member at our address but we have no data: it is a
			// past life of this node. Remove it and join afresh.
			cfg.Log.Warn("removing a stale member at this node's address", "member", fmt.Sprintf("%x", m.ID), "name", m.Name)
			if _, err := c.MemberRemove(ctx, m.ID); err != nil {
				return 0, "", fmt.Errorf("store: removing stale member %x: %w", m.ID, err)
			}
		case m.Name == "":
			// Added by a joiner that died before starting; we hold the lock,
			// so nobody else is mid-join. It would block our learner slot.
			cfg.Log.Warn("removing an unstarted member left by a failed join", "member", fmt.Sprintf("%x", m.ID), "urls", m.PeerURLs)
			if _, err := c.MemberRemove(ctx, m.ID); err != nil {
				return 0, "", fmt.Errorf("store: removing unstarted member %x: %w", m.ID, err)
			}
		case m.IsLearner:
			// A learner that started but was never promoted: its node died
			// mid-join. Promote it if it has caught up, so our slot is free.
			if _, err := c.MemberPromote(ctx, m.ID); err != nil {
				return 0, "", fmt.Errorf("store: member %s is a learner left by an unfinished join and can't be promoted yet: %w", m.Name, err)
			}
		}
	}
	if id == 0 {
		// etcd refuses reconfiguration until every voter has been connected
		// for a while ("unhealthy cluster"), as after the previous join;
		// and a member at this address removed just before (a node scaled
		// in, then out again under the same name) can still be reported
		// "not found" while the removal settles.
		var resp *clientv3.MemberAddResponse
		err := retry(ctx, func() (err error) {
			resp, err = c.MemberAddAsLearner(ctx, []string{me})
			return err
		}, func(err error) bool { return isUnhealthy(err) || errors.Is(err, rpctypes.ErrMemberNotFound) })
		if err != nil {
			return 0, "", fmt.Errorf("store: adding %s as a learner: %w", cfg.Name, err)
		}
		id = resp.Member.ID
	}
	list, err = c.MemberList(ctx)
	if err != nil {
		return 0, "", err
	}
	var parts []string
	for _, m := range list.Members {
		name := m.Name
		if m.ID == id {
			name = cfg.Name
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, name+"="+u)
		}
	}
	return id, strings.Join(parts, ","), nil
}

// RemoveMember takes a member out of the cluster. etcd refuses to
// reconfigure until every voter has been connected for a few seconds
// ("unhealthy cluster", as right after a join); that refusal is waited out.
//
// Removing the very member that serves the request stops it before it
// answers ("server stopped"); whether that removal went through is then
// read from the membership, through another member.
func RemoveMember(ctx context.Context, c *clientv3.Client, id uint64) error {
	return retry(ctx, func() error {
		_, err := c.MemberRemove(ctx, id)
		if errors.Is(err, rpctypes.ErrStopped) || errors.Is(err, rpctypes.ErrGRPCStopped) {
			if list, lerr := c.MemberList(ctx); lerr == nil && !slices.ContainsFunc(list.Members, func(m *etcdserverpb.Member) bool { return m.ID == id }) {
				return nil
			}
		}
		return err
	}, func(err error) bool {
		return isUnhealthy(err) || errors.Is(err, rpctypes.ErrStopped) || errors.Is(err, rpctypes.ErrGRPCStopped)
	})
}

func isUnhealthy(err error) bool { return errors.Is(err, rpctypes.ErrUnhealthy) }

func hasURL(urls []string, u string) bool {
	for _, x := range urls {
		if x == u {
			return true
		}
	}
	return false
}

// promote retries until the learner has caught up with the leader.
func promote(ctx context.Context, c *clientv3.Client, id uint64) error {
	err := retry(ctx, func() error {
		_, err := c.MemberPromote(ctx, id)
		return err
	}, func(err error) bool {
		return errors.Is(err, rpctypes.ErrMemberLearnerNotReady) || isUnhealthy(err)
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rpctypes.ErrMemberNotLearner):
		return nil // a retried request had gone through: it is a voter already
	}
	return fmt.Errorf("store: promoting member %x: %w", id, err)
}

// startMember runs the embedded etcd server and connects a client to it.
func startMember(ctx context.Context, cfg Config, state, initialCluster string) (*Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	peer, _ := url.Parse(cfg.peerURL())
	client, _ := url.Parse(ClientURL(cfg.IP, cfg.ClientPort))
	tlsInfo := transport.TLSInfo{
		CertFile:       cfg.TLS.Cert,
		KeyFile:        cfg.TLS.Key,
		TrustedCAFile:  cfg.TLS.CA,
		ClientCertAuth: true,
	}
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.etcdDir()
	ec.ListenPeerUrls = []url.URL{*peer}
	ec.AdvertisePeerUrls = []url.URL{*peer}
	ec.ListenClientUrls = []url.URL{*client}
	ec.AdvertiseClientUrls = []url.URL{*client}
	ec.ClientTLSInfo = tlsInfo
	ec.PeerTLSInfo = tlsInfo
	ec.TlsMinVersion = "TLS1.3"
	ec.ClusterState = state
	ec.InitialCluster = initialCluster
	ec.InitialClusterToken = cmp.Or(cfg.ClusterID, "corral")
	ec.StrictReconfigCheck = true
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "1h"
	ec.QuotaBackendBytes = cfg.Quota
	ec.LogLevel = "warn"
	ec.EnableGRPCGateway = false

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("store: starting etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("store: etcd failed while starting: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("store: etcd did not become ready: %w", ctx.Err())
	}
	// Prefer the local server, but know the others: the client fails over
	// when this member is cut off from the quorum.
	endpoints := append([]string{client.String()}, without(cfg.Members, client.String())...)
	c, err := Connect(context.WithoutCancel(ctx), cfg.TLS, endpoints)
	if err != nil {
		e.Close()
		return nil, err
	}
	return &Store{Client: c, etcd: e, log: cfg.Log, cfg: cfg}, nil
}

func without(list []string, x string) []string {
	var out []string
	for _, s := range list {
		if s != x {
			out = append(out, s)
		}
	}
	return out
}

// member is the embedded server, or nil on a client.
func (s *Store) member() *embed.Etcd {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.etcd
}

// IsMember reports whether this node runs an etcd member.
func (s *Store) IsMember() bool { return s.member() != nil }

// MemberID is this node's etcd member id, or 0 on a client.
func (s *Store) MemberID() uint64 {
	e := s.member()
	if e == nil {
		return 0
	}
	return uint64(e.Server.MemberID())
}

// Done is closed if the embedded server stops on its own (for example when
// the node is removed from the cluster); it is nil on a client.
func (s *Store) Done() <-chan struct{} {
	e := s.member()
	if e == nil {
		return nil
	}
	return e.Server.StopNotify()
}

// Promote turns a running client into a voting member, through the same
// path as a join (learner, catch up, promote, under the join lock): its
// embedded etcd starts in the data dir, so a restart comes back as the
// member whatever mode it is given. check runs under the join lock (see
// Config.JoinIf). The client keeps talking to the cluster as before.
func (s *Store) Promote(ctx context.Context, check func(context.Context, *clientv3.Client) error) error {
	if s.IsMember() {
		return nil
	}
	cfg := s.cfg
	cfg.Members = s.Client.Endpoints() // the voters now, not the ones it booted with
	cfg.JoinIf = check
	m, err := join(ctx, cfg)
	if err != nil {
		return err
	}
	m.Client.Close()
	s.mu.Lock()
	s.etcd = m.etcd
	s.mu.Unlock()
	return nil
}

// Close disconnects and stops the embedded server.
func (s *Store) Close() error {
	err := s.Client.Close()
	if e := s.member(); e != nil {
		e.Close()
	}
	return err
}
