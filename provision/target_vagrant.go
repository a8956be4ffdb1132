package provision

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/corral-dev/corral/providers/vagrant"
	"github.com/corral-dev/corral/provision/config"
	"github.com/corral-dev/corral/provision/plan"
	"github.com/corral-dev/corral/provision/state"
)

// vagrantTarget makes the nodes' machines with Vagrant, from a Vagrantfile
// in the state directory, and installs clusterd on them over SSH.
type vagrantTarget struct {
	*vagrant.Provider
	cfg *config.VagrantProvider
}

// vagrantFirstHost is coreos-vagrant's numbering: machine N is .100+N.
const vagrantFirstHost = 100

// vagrantTarget sets up the provider; with check, it first makes sure
// that vagrant and the Vagrant provider can run.
func (c *cluster) vagrantTarget(ctx context.Context, check bool) (*vagrantTarget, error) {
	bin, err := c.binary()
	if err != nil {
		return nil, err
	}
	cfg := c.cfg.Provider.Vagrant
	p := &vagrant.Provider{
		Dir: filepath.Join(c.dir.Path, "vagrant"),
		Settings: vagrant.Settings{Box: cfg.Box, Provider: cfg.Provider, Memory: cfg.Memory, CPUs: cfg.CPUs,
			Network: cfg.Network},
		Out: c.opts.Out,
		SSH: vagrant.SSHOptions{HostKeys: maps.Clone(c.state.HostKeys), OnNewHostKey: c.recordHostKey, Binary: bin},
	}
	// A missing vagrant or provider plugin is reported before anything
	// is written.
	if check {
		if err := p.Check(ctx); err != nil {
			return nil, err
		}
	}
	return &vagrantTarget{Provider: p, cfg: cfg}, nil
}

func (t *vagrantTarget) describe() string {
	return fmt.Sprintf("vagrant provider, box %s on %s, %s", t.cfg.Box, t.cfg.Provider, t.cfg.Network)
}
func (t *vagrantTarget) setup(context.Context) error    { return nil }
func (t *vagrantTarget) teardown(context.Context) error { return nil } // the directory goes with the state
func (t *vagrantTarget) inPlace() bool                  { return true }
func (t *vagrantTarget) overlay() bool                  { return true }
func (t *vagrantTarget) isolation() string              { return "" }
func (t *vagrantTarget) release()                       {}
func (t *vagrantTarget) logHint() string {
	return "read one with: provision ssh FILE NODE -- journalctl -u clusterd"
}

// assign gives the node the lowest free address from .101 up.
func (t *vagrantTarget) assign(n *state.Node, others []state.Node) error {
	taken := map[netip.Addr]bool{}
	for _, o := range others {
		taken[o.IP] = true
	}
	ip := t.cfg.Network.Masked().Addr()
	for range vagrantFirstHost {
		ip = ip.Next()
	}
	for ip = ip.Next(); t.cfg.Network.Contains(ip); ip = ip.Next() {
		if !taken[ip] {
			n.IP = ip
			return nil
		}
	}
	return fmt.Errorf("node %s: no free address in %s from .%d up", n.Name, t.cfg.Network, vagrantFirstHost+1)
}

// machineID is not read from Vagrant machines: a removed node's subnet
// stays leased, and is found by its address when the cluster prunes it.
func (t *vagrantTarget) machineID(context.Context, state.Node) (string, error) {
	return "", errors.New("vagrant: machine ids are not read")
}

// vagrantfile is the Vagrantfile up would write: the state's machines and
// those the plan would create, with their addresses. Nothing is run.
func (c *cluster) vagrantfile(ctx context.Context) ([]byte, error) {
	t, err := c.vagrantTarget(ctx, false)
	if err != nil {
		return nil, err
	}
	pl, err := c.planWith(nil, true)
	if err != nil {
		return nil, err
	}
	nodes := slices.Clone(c.state.Nodes)
	for _, ch := range pl.Of(plan.Node, plan.Create) {
		n, err := c.newNode(t, ch.Name, ch.Group, "")
		if err != nil {
			return nil, err
		}
		c.state.Nodes = append(c.state.Nodes, *n) // for the next address; not saved
	}
	defer func() { c.state.Nodes = nodes }()
	var ms []vagrant.Machine
	for _, n := range c.state.Nodes {
		ms = append(ms, vagrant.Machine{Name: vagrant.MachineName(n.Name), IP: n.IP})
	}
	return vagrant.Vagrantfile(t.Settings, ms), nil
}
