// Package overlay gives this machine its subnet of the cluster network and
// keeps it connected to every other machine's, as flannel did: it waits for
// the network config in etcd, leases a subnet (the same one it held before),
// starts the configured backend, puts the subnet's first address on a
// bridge, writes flannel's subnet.env, and from then on syncs the backend
// with the set of leases on every change.
//
// When clusterd stops, the network stays as it is (machines keep talking
// while clusterd restarts) unless Cleanup asks for everything to go.
package overlay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/corral-dev/corral/clusterd/overlay/backend"
	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults.
const (
	DefaultBridge     = "corral0"
	DefaultSubnetFile = "/run/flannel/subnet.env"
)

// Config is one machine's part in the overlay.
type Config struct {
	MachineID  string
	PublicIP   netip.Addr
	Bridge     string // default DefaultBridge
	SubnetFile string // default DefaultSubnetFile
	IPMasq     bool   // masquerade traffic from the overlay to elsewhere
	Cleanup    bool   // remove devices, routes and rules when stopping
	Log        *slog.Logger
	// AWSVPC is what the aws-vpc backend needs (EC2 client, instance id);
	// nil where it can't run: anywhere but an EC2 instance whose clusterd
	// was started with --aws-bootstrap.
	AWSVPC *backend.AWSVPCConfig
}

// Manager runs the overlay on this machine.
type Manager struct {
	cfg    Config
	client *clientv3.Client

	mu    sync.Mutex
	state *State // nil until the machine has its subnet
}

// State is what the machine has once its overlay is up.
type State struct {
	Network netip.Prefix
	Subnet  netip.Prefix
	Bridge  netip.Addr // the subnet's first address, on the bridge
	MTU     int
	Backend string
}

// New returns a manager for this machine.
func New(c *clientv3.Client, cfg Config) *Manager {
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if cfg.SubnetFile == "" {
		cfg.SubnetFile = DefaultSubnetFile
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	cfg.Log = cfg.Log.With("component", "overlay")
	return &Manager{cfg: cfg, client: c}
}

// State returns the overlay's state, or nil before it is up.
func (m *Manager) State() *State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// Run brings the overlay up and keeps it in sync until ctx ends. Problems
// that a change in etcd can fix (no config yet, the network exhausted) are
// logged and waited out; they never stop clusterd.
func (m *Manager) Run(ctx context.Context) error {
	netcfg, err := m.waitConfig(ctx)
	if err != nil {
		return err
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	be, err := newBackend(netcfg.Backend.Type, h, m.cfg.AWSVPC)
	if err != nil {
		return err
	}
	lease, err := m.acquire(ctx, netcfg, nil)
	if err != nil {
		return err
	}
	underlay, err := underlayOf(h, m.cfg.PublicIP)
	if err != nil {
		return err
	}
	data, mtu, err := be.Start(backend.Local{
		Network: netcfg.Network, Subnet: lease.Subnet, PublicIP: m.cfg.PublicIP, Underlay: underlay,
		VNI: netcfg.Backend.VNI, Port: netcfg.Backend.Port,
	})
	if err != nil {
		return fmt.Errorf("overlay: starting the %s backend: %w", netcfg.Backend.Type, err)
	}
	if m.cfg.Cleanup {
		defer be.Close()
	}
	// Publish what peers need to reach us (the vxlan VTEP's MAC, say).
	if lease, err = m.acquire(ctx, netcfg, data); err != nil {
		return err
	}
	// Packets from the bridge to other machines' subnets are routed here.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("overlay: enabling IP forwarding: %w", err)
	}
	st := &State{Network: netcfg.Network, Subnet: lease.Subnet, Bridge: lease.Subnet.Addr().Next(), MTU: mtu, Backend: netcfg.Backend.Type}
	if err := ensureBridge(h, m.cfg.Bridge, netip.PrefixFrom(st.Bridge, lease.Subnet.Bits()), mtu); err != nil {
		return err
	}
	if m.cfg.Cleanup {
		defer deleteLink(h, m.cfg.Bridge)
	}
	if m.cfg.IPMasq {
		if err := masquerade(netcfg.Network, true); err != nil {
			m.cfg.Log.Error("ip masquerade not set up", "err", err)
		} else if m.cfg.Cleanup {
			defer masquerade(netcfg.Network, false)
		}
	}
	echo, err := listenEcho(st.Bridge)
	if err != nil {
		return err
	}
	defer echo.Close()
	m.mu.Lock()
	m.state = st
	m.mu.Unlock()
	// subnet.env comes last: tools that wait for it find the overlay up.
	if err := writeSubnetEnv(m.cfg.SubnetFile, st, m.cfg.IPMasq); err != nil {
		return err
	}
	if m.cfg.Cleanup {
		defer os.Remove(m.cfg.SubnetFile)
	}
	m.cfg.Log.Info("overlay up", "subnet", st.Subnet, "backend", st.Backend, "mtu", mtu, "bridge", m.cfg.Bridge)

	err = subnet.Watch(ctx, m.client, func(leases []subnet.Lease) {
		if err := be.Sync(peersOf(leases, m.cfg.MachineID)); err != nil {
			m.cfg.Log.Error("overlay sync incomplete", "err", err)
		}
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// waitConfig returns the network config, waiting for provision to write it.
func (m *Manager) waitConfig(ctx context.Context) (*subnet.Config, error) {
	logged := false
	for {
		cfg, rev, err := subnet.GetConfig(ctx, m.client)
		if err == nil {
			return cfg, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !logged {
			m.cfg.Log.Info("no overlay network configured yet; waiting for " + subnet.ConfigKey)
			logged = true
		}
		if err := waitChange(ctx, m.client, subnet.ConfigKey, rev, false); err != nil {
			return nil, err
		}
	}
}

// acquire leases the machine's subnet, waiting while the network is full:
// a release or a wider network can make room without a restart.
func (m *Manager) acquire(ctx context.Context, cfg *subnet.Config, data json.RawMessage) (*subnet.Lease, error) {
	for {
		lease, err := subnet.Acquire(ctx, m.client, cfg, m.cfg.MachineID, m.cfg.PublicIP, cfg.Backend.Type, data)
		if err == nil {
			return lease, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(err, subnet.ErrExhausted) {
			return nil, err
		}
		m.cfg.Log.Error("no subnet for this machine; waiting for a lease to be released", "err", err)
		_, rev, lerr := subnet.List(ctx, m.client)
		if lerr != nil {
			return nil, lerr
		}
		if err := waitChange(ctx, m.client, subnet.SubnetPrefix, rev, true); err != nil {
			return nil, err
		}
	}
}

// waitChange blocks until key (or anything below it) changes after rev.
func waitChange(ctx context.Context, c *clientv3.Client, key string, rev int64, prefix bool) error {
	opts := []clientv3.OpOption{clientv3.WithRev(rev + 1)}
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	select {
	case <-c.Watch(wctx, key, opts...):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func peersOf(leases []subnet.Lease, self string) []backend.Peer {
	peers := make([]backend.Peer, 0, len(leases))
	for _, l := range leases {
		if l.MachineID == self {
			continue
		}
		peers = append(peers, backend.Peer{Subnet: l.Subnet, PublicIP: l.PublicIP, BackendType: l.BackendType, BackendData: l.BackendData})
	}
	return peers
}

func newBackend(kind string, h *netlink.Handle, aws *backend.AWSVPCConfig) (backend.Backend, error) {
	switch kind {
	case "aws-vpc":
		if aws == nil {
			return nil, errors.New(`overlay: backend "aws-vpc" runs only on EC2 instances whose clusterd was started with --aws-bootstrap; use backend "vxlan" elsewhere`)
		}
		return backend.NewAWSVPC(h, *aws), nil
	case "vxlan":
		return backend.NewVXLAN(h, ""), nil
	case "host-gw":
		return backend.NewHostGW(h), nil
	case "udp":
		return backend.NewUDP(h, ""), nil
	}
	return nil, fmt.Errorf("overlay: backend %q is not available on this machine", kind)
}

// underlayOf finds the interface that carries ip.
func underlayOf(h *netlink.Handle, ip netip.Addr) (string, error) {
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if a.IP.Equal(net.IP(ip.AsSlice())) {
			link, err := h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return "", err
			}
			return link.Attrs().Name, nil
		}
	}
	return "", fmt.Errorf("overlay: no interface on this machine has the address %s", ip)
}

var errNotUp = errors.New("overlay: this machine's overlay is not up")

// Check probes every peer from this machine: see Probe.
func (m *Manager) Check(ctx context.Context) ([]Result, error) {
	st := m.State()
	if st == nil {
		return nil, errNotUp
	}
	leases, _, err := subnet.List(ctx, m.client)
	if err != nil {
		return nil, err
	}
	var targets []subnet.Lease
	for _, l := range leases {
		if l.MachineID != m.cfg.MachineID {
			targets = append(targets, l)
		}
	}
	return Probe(ctx, st, targets, 2*time.Second), nil
}
