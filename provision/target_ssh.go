package provision

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/corral-dev/corral/providers"
	"github.com/corral-dev/corral/providers/ssh"
	"github.com/corral-dev/corral/provision/config"
	"github.com/corral-dev/corral/provision/state"
)

// orphanPrefix names, in the ssh provider's hosts, a configured host that
// no node of the state is on: "host:10.0.0.13". Inventory looks at every
// configured host, so that an installation the state does not know (a run
// that died between installing and saving, or a state that was lost) is
// found: plan then deletes it, and down removes it, under that name.
const orphanPrefix = "host:"

// sshLog is where clusterd logs on a machine without systemd (the ssh
// provider's supervisor, see providers/ssh/scripts.go).
const sshLog = "/var/lib/corral/clusterd.log"

// sshTarget installs nodes on existing machines over SSH, one node per
// host of the provider block.
type sshTarget struct {
	*ssh.Provider
	c   *cluster
	cfg *config.SSHProvider
}

func (c *cluster) sshTarget() (*sshTarget, error) {
	bin, err := c.binary()
	if err != nil {
		return nil, err
	}
	cfg := c.cfg.Provider.SSH
	if cfg == nil {
		return nil, fmt.Errorf("provider \"ssh\" has no settings")
	}
	t := &sshTarget{c: c, cfg: cfg}
	t.Provider = &ssh.Provider{
		User: cfg.User, IdentityFiles: cfg.IdentityFiles, KnownHosts: cfg.KnownHosts,
		HostKeys: maps.Clone(c.state.HostKeys), OnNewHostKey: t.recordHostKey,
		Binary: bin,
	}
	t.refreshHosts(nil)
	return t, nil
}

// recordHostKey keeps a host's first key in the state (see
// cluster.recordHostKey).
func (t *sshTarget) recordHostKey(host, fingerprint string) error {
	return t.c.recordHostKey(host, fingerprint)
}

// refreshHosts rebuilds the provider's hosts: every node of the state (and
// extra, a node being added) on its host, and every configured host no
// node is on under its orphan name. It replaces the map rather than
// changing it: it runs only between provider calls (apply records nodes,
// then launches them), never during one.
func (t *sshTarget) refreshHosts(extra *state.Node) {
	hosts := map[string]string{}
	taken := map[string]bool{}
	nodes := slices.Clone(t.c.state.Nodes)
	if extra != nil {
		nodes = append(nodes, *extra)
	}
	for _, n := range nodes {
		if n.Host != "" {
			hosts[n.Name] = n.Host
			taken[n.Host] = true
		}
	}
	for _, h := range t.cfg.Hosts {
		if !taken[h] {
			hosts[orphanPrefix+h] = h
		}
	}
	t.Hosts = hosts
}

// owner is the state's node on host, or "".
func (t *sshTarget) owner(host string) string {
	for _, n := range t.c.state.Nodes {
		if n.Host == host {
			return n.Name
		}
	}
	return ""
}

func (t *sshTarget) describe() string {
	return fmt.Sprintf("ssh provider, %d hosts, user %s", len(t.cfg.Hosts), t.Provider.User)
}

func (t *sshTarget) setup(context.Context) error    { return nil }
func (t *sshTarget) teardown(context.Context) error { return nil }
func (t *sshTarget) inPlace() bool                  { return true }
func (t *sshTarget) overlay() bool                  { return true }
func (t *sshTarget) isolation() string              { return "" }
func (t *sshTarget) release()                       {}

func (t *sshTarget) logHint() string {
	return "on the node's host: journalctl -u clusterd (systemd), else " + sshLog
}

// assign puts the node on the first configured host no other node is on.
func (t *sshTarget) assign(n *state.Node, others []state.Node) error {
	taken := map[string]bool{}
	for _, o := range others {
		taken[o.Host] = true
	}
	i := slices.IndexFunc(t.cfg.Hosts, func(h string) bool { return !taken[h] })
	if i < 0 {
		return fmt.Errorf("node %s: no free host: all %d hosts of the ssh provider have a node; add hosts or lower desired_capacity", n.Name, len(t.cfg.Hosts))
	}
	host := t.cfg.Hosts[i]
	ip, err := hostIP(host)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	n.Host, n.IP = host, ip
	t.refreshHosts(n)
	return nil
}

// hostIP is the address of a host as the provider block writes it
// ("10.0.0.11", "[fd00::1]:2222", "node3.example.com"): the literal, or
// the name's first IPv4 address.
func hostIP(host string) (netip.Addr, error) {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.Unmap(), nil
	}
	ips, err := net.LookupIP(h)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("host %s: %w", host, err)
	}
	for _, ip := range ips {
		if v4 := ip.To4(); v4 != nil {
			return netip.AddrFrom4([4]byte(v4)), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("host %s has no IPv4 address (it resolves to %v)", host, ips)
}

// Inventory lists the nodes installed on the hosts. A host under its
// orphan name is listed only if an installation was found there: an
// unreachable host with no node is nothing to delete.
func (t *sshTarget) Inventory(ctx context.Context) ([]providers.Instance, error) {
	list, err := t.Provider.Inventory(ctx)
	if err != nil {
		return nil, t.explain(err)
	}
	return slices.DeleteFunc(list, func(in providers.Instance) bool {
		return strings.HasPrefix(in.Name, orphanPrefix) && strings.HasPrefix(in.Detail, "unreachable: ")
	}), nil
}

// Terminate removes a node's installation. An orphan whose host has been
// given to a node since it was listed (the same run installed that node
// over it) is left alone: it is that node now.
func (t *sshTarget) Terminate(ctx context.Context, name string) error {
	if host, ok := strings.CutPrefix(name, orphanPrefix); ok && t.owner(host) != "" {
		return nil
	}
	return t.explain(t.Provider.Terminate(ctx, name))
}

// Launch installs the node on its host (see ssh.Provider.Launch).
func (t *sshTarget) Launch(ctx context.Context, spec providers.NodeSpec) error {
	return t.explain(t.Provider.Launch(ctx, spec))
}

// explain makes a refused host key that was recorded on first use say
// where: in the state file, whose host_keys entry the operator removes
// once the machine is known to be reinstalled.
func (t *sshTarget) explain(err error) error {
	var hk *ssh.HostKeyError
	if errors.As(err, &hk) && len(t.cfg.KnownHosts) == 0 {
		hk.Where = fmt.Sprintf("host_keys in %s", filepath.Join(t.c.dir.Path, "state.json"))
	}
	return err
}

// machineID reads the id over SSH. When the host can't be reached it is
// an error, and the node's overlay subnet stays leased until its lease
// expires.
func (t *sshTarget) machineID(ctx context.Context, n state.Node) (string, error) {
	id, err := t.Provider.MachineID(ctx, n.Name)
	return id, t.explain(err)
}
