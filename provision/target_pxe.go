package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/corral-dev/corral/providers"
	"github.com/corral-dev/corral/providers/local"
	"github.com/corral-dev/corral/providers/pxe"
	"github.com/corral-dev/corral/providers/ssh"
	"github.com/corral-dev/corral/provision/config"
	"github.com/corral-dev/corral/provision/state"
	"github.com/corral-dev/corral/templates"
)

// pxeTarget network-boots bare-metal machines: while provision runs it
// serves their iPXE scripts, kernel, initramfs and boot configs (and
// iPXE's binaries over TFTP), and a machine that is powered on boots into
// clusterd. Launch hands the node's configs to the boot server; the
// machines boot by themselves (or by whoever powers them on), and up
// waits for them to join, or for their error on /report.
type pxeTarget struct {
	*pxe.Server
	c   *cluster
	cfg *config.PXEProvider

	mu     sync.Mutex
	stop   context.CancelFunc
	served chan error
	seen   map[string]string // node → its last status reported this run
}

func (c *cluster) pxeTarget() (*pxeTarget, error) {
	cfg := c.cfg.Provider.PXE
	bin, err := c.binary()
	if err != nil {
		return nil, err
	}
	t := &pxeTarget{c: c, cfg: cfg, seen: map[string]string{}}
	t.Server = &pxe.Server{
		BaseURL:   cfg.URL,
		Assets:    map[string]string{"clusterd": bin},
		Log:       slog.New(slog.NewTextHandler(c.opts.Err, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Installed: map[string]time.Time{},
		OnInstalled: func(name string, at time.Time) {
			t.update(name, func(n *state.Node) {
				if at.IsZero() {
					n.Installed = nil
				} else {
					n.Installed = &at
				}
			})
		},
		OnBind: func(name, mac string) { t.update(name, func(n *state.Node) { n.MAC = mac }) },
		OnStatus: func(name, status string) {
			t.mu.Lock()
			t.seen[name] = status
			t.mu.Unlock()
		},
	}
	for _, n := range c.state.Nodes {
		if n.Installed != nil {
			t.Installed[n.Name] = *n.Installed
		}
	}
	for _, g := range c.cfg.NodeGroups {
		if g.PXE == nil || g.PXE.Boot == nil {
			continue
		}
		for _, f := range append([]string{g.PXE.Boot.Kernel}, g.PXE.Boot.Initrds...) {
			t.Assets[assetName(g.Name, f)] = f
		}
	}
	return t, nil
}

// assetName is how the boot server names a group's boot file: the group
// keeps two groups' files of one name apart.
func assetName(group, path string) string { return group + "-" + filepath.Base(path) }

// update changes a node of the state and saves it; the boot server calls
// it from its handlers.
func (t *pxeTarget) update(name string, fn func(*state.Node)) {
	t.c.keysMu.Lock()
	defer t.c.keysMu.Unlock()
	if n := t.c.state.Node(name); n != nil {
		fn(n)
		if err := t.c.dir.Save(t.c.state); err != nil {
			t.Log.Error("saving the state", "err", err)
		}
	}
}

func (t *pxeTarget) describe() string {
	return fmt.Sprintf("pxe provider, boot server %s, machines in %s", t.cfg.URL, t.cfg.Network)
}

// setup starts the boot server (and TFTP) for the length of the run.
func (t *pxeTarget) setup(ctx context.Context) error {
	var groups []pxe.Group
	for _, g := range t.c.cfg.NodeGroups {
		if g.PXE == nil || (len(g.PXE.Ranges) == 0 && !g.PXE.Default) {
			continue
		}
		pg := pxe.Group{Name: g.Name, Default: g.PXE.Default}
		for _, r := range g.PXE.Ranges {
			pg.Ranges = append(pg.Ranges, pxe.MACRange{First: r.From.String(), Last: r.To.String()})
		}
		groups = append(groups, pg)
	}
	if err := t.SetGroups(groups); err != nil {
		return err
	}
	l, err := net.Listen("tcp", t.cfg.Listen)
	if err != nil {
		return fmt.Errorf("pxe: the boot server can't listen on %s: %w", t.cfg.Listen, err)
	}
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	t.stop = stop
	t.served = make(chan error, 2)
	go func() { t.served <- t.Serve(sctx, l) }()
	if t.cfg.TFTP {
		host, _, _ := net.SplitHostPort(t.cfg.Listen)
		addr := net.JoinHostPort(host, "69")
		conn, err := net.ListenPacket("udp", addr)
		if err != nil {
			stop()
			return fmt.Errorf("pxe: TFTP can't listen on %s: %w", addr, err)
		}
		go func() { t.served <- pxe.ServeTFTP(sctx, conn, pxe.DefaultTFTPDir) }()
	}
	return nil
}

// release stops the boot server: machines that boot after the run find
// none (`provision serve` keeps one up).
func (t *pxeTarget) release() {
	if t.stop != nil {
		t.stop()
	}
}

func (t *pxeTarget) teardown(context.Context) error { return nil }
func (t *pxeTarget) inPlace() bool                  { return true } // the next boot takes the new config
func (t *pxeTarget) overlay() bool                  { return true }
func (t *pxeTarget) isolation() string              { return "" }
func (t *pxeTarget) logHint() string {
	return "a machine's own console shows its boot; errors it reports come to the boot server's /report"
}

// assign gives a node its machine: a named machine's MAC and a fixed
// address (.10+n of the network, reserved by MAC in the dnsmasq
// configuration); a node of a mac_range or default group gets neither
// until a machine boots (its address from DHCP), so it can't be an etcd
// member, whose address every joining node must know in advance.
func (t *pxeTarget) assign(n *state.Node, others []state.Node) error {
	g := t.c.group(n.Group)
	if g == nil || g.PXE == nil {
		return fmt.Errorf("node %s: group %q has no machines", n.Name, n.Group)
	}
	i := slices.IndexFunc(g.PXE.Machines, func(m config.BareMetal) bool { return m.Name == n.Name })
	if i < 0 {
		if n.Role == state.Member {
			n.Role = state.Client
		}
		return nil
	}
	n.MAC = g.PXE.Machines[i].MAC.String()
	ip, err := local.Allocate(t.cfg.Network, used(others))
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	n.IP = ip
	return nil
}

// Launch renders the node's configs and hands them to the boot server.
func (t *pxeTarget) Launch(ctx context.Context, spec providers.NodeSpec) error {
	n := t.c.state.Node(spec.Name)
	g := t.c.group(n.Group)
	if spec.Boot == nil || g == nil || g.PXE == nil || g.PXE.Boot == nil {
		return fmt.Errorf("pxe: node %s has nothing to boot", spec.Name)
	}
	ign, err := templates.Render(*spec.Boot, templates.FormatIgnition)
	if err != nil {
		return err
	}
	cc, err := templates.Render(*spec.Boot, templates.FormatCloudConfig)
	if err != nil {
		return err
	}
	b := g.PXE.Boot
	prof := pxe.Profile{Kernel: assetName(g.Name, b.Kernel), Args: b.Args, OwnIgnition: b.OwnIgnition}
	for _, f := range b.Initrds {
		prof.Initrds = append(prof.Initrds, assetName(g.Name, f))
	}
	m := pxe.Machine{Name: n.Name, MAC: n.MAC, Group: g.Name, Profile: prof, Ignition: ign, CloudConfig: cc,
		InstallToDisk: g.PXE.InstallToDisk}
	if i := slices.IndexFunc(g.PXE.Machines, func(m config.BareMetal) bool { return m.Name == n.Name }); i >= 0 {
		m.UUID = g.PXE.Machines[i].UUID
	}
	return t.Set(m)
}

// Inventory lists the state's nodes: a bare-metal machine can't be asked
// whether it runs; what it reported during this run is the detail.
func (t *pxeTarget) Inventory(context.Context) ([]providers.Instance, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []providers.Instance
	for _, n := range t.c.state.Nodes {
		detail := "bare metal " + n.MAC
		if s := t.seen[n.Name]; s != "" {
			detail += ", " + s
		}
		out = append(out, providers.Instance{Name: n.Name, Running: true, Detail: detail})
	}
	return out, nil
}

// Terminate stops serving the node: the machine, powered off or
// reinstalled by its owner, boots into nothing of the cluster's.
func (t *pxeTarget) Terminate(_ context.Context, name string) error {
	t.Remove(name)
	return nil
}

func (t *pxeTarget) machineID(context.Context, state.Node) (string, error) {
	return "", errors.New("pxe: machine ids are not read from bare metal")
}

// dnsmasqConfig is the dnsmasq configuration for the machines' network:
// proxy-DHCP or full DHCP with the named machines' addresses reserved.
func (c *cluster) dnsmasqConfig() ([]byte, error) {
	cfg := c.cfg.Provider.PXE
	n := cfg.Network.Masked()
	o := pxe.DnsmasqOptions{Interface: cfg.Interface, Network: n, Proxy: cfg.ProxyDHCP,
		BootURL: cfg.URL + "/boot.ipxe", EnableTFTP: !cfg.TFTP}
	if !o.Proxy {
		// Leases for machines of ranges and default groups from .200 up;
		// named machines have their addresses from .11 (as assign gives).
		base := n.Addr().As4()
		o.RangeStart = netip.AddrFrom4([4]byte{base[0], base[1], base[2], base[3] + 200})
		o.RangeEnd = netip.AddrFrom4([4]byte{base[0], base[1], base[2], base[3] + 250})
		t := &pxeTarget{c: c, cfg: cfg}
		nodes := slices.Clone(c.state.Nodes)
		for _, g := range c.cfg.NodeGroups {
			if g.PXE == nil {
				continue
			}
			for _, m := range g.PXE.Machines {
				node := c.state.Node(m.Name)
				if node == nil {
					nn := state.Node{Name: m.Name, Group: g.Name}
					if err := t.assign(&nn, nodes); err != nil {
						return nil, err
					}
					nodes = append(nodes, nn)
					node = &nn
				}
				o.Hosts = append(o.Hosts, pxe.DnsmasqHost{MAC: m.MAC.String(), IP: node.IP, Name: m.Name})
			}
		}
	}
	return pxe.DnsmasqConfig(o)
}

var _ providers.Sheller = (*pxeTarget)(nil)

// Shell reaches a bare-metal node over SSH at its address, as user core
// with the agent's keys (an OS with its own Ignition, given the cluster's
// ssh_authorized_keys); host keys are trusted on first use and recorded.
// Corral's initramfs runs no SSH server.
func (t *pxeTarget) Shell(ctx context.Context, node, command string, in io.Reader, out, errOut io.Writer) (int, error) {
	n := t.c.state.Node(node)
	if n == nil || !n.IP.IsValid() {
		return 0, fmt.Errorf("pxe: node %s has no fixed address (it took one from DHCP): find it with clusterctl list-machines", node)
	}
	p := &ssh.Provider{Hosts: map[string]string{node: n.IP.String()}, HostKeys: maps.Clone(t.c.state.HostKeys), OnNewHostKey: t.c.recordHostKey}
	code, err := p.Shell(ctx, node, command, in, out, errOut)
	if err != nil && errors.Is(err, syscall.ECONNREFUSED) {
		err = fmt.Errorf("%w (machines that boot Corral's initramfs run no SSH server; an OS with its own Ignition does)", err)
	}
	return code, err
}
