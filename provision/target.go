package provision

import (
	"context"
	"fmt"
	"os"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/providers"
	"github.com/corral-dev/corral/providers/local"
	"github.com/corral-dev/corral/provision/state"
)

// target is the cluster's provider as provision drives it: the provider
// itself, and what provision must know of it to plan and to launch.
type target interface {
	providers.Provider
	// describe is the run's first line: "local provider, netns isolation, 10.77.0.0/24".
	describe() string
	// setup makes the shared resources nodes need (a bridge); teardown
	// removes them once every node is gone.
	setup(ctx context.Context) error
	teardown(ctx context.Context) error
	// assign gives a new node its address (and machine) among the others.
	assign(n *state.Node, others []state.Node) error
	// inPlace says a changed boot config is installed on the running
	// machine rather than on a new one.
	inPlace() bool
	// machineID is the node's machine id, if it can be known without the
	// registry (to release its subnet after it is gone).
	machineID(ctx context.Context, n state.Node) (string, error)
	// overlay says whether the nodes can run the overlay network.
	overlay() bool
	// isolation is recorded in the state ("netns" or "loopback" for local).
	isolation() string
	// logHint says where to read a node's log.
	logHint() string
	// release lets go of what setup holds for the run (a boot server).
	release()
}

// localTarget runs nodes as processes on this host.
type localTarget struct {
	*local.Provider
	stateDir string
}

func (t localTarget) describe() string {
	return fmt.Sprintf("local provider, %s isolation, %s", t.Isolation, t.Prefix())
}
func (t localTarget) setup(ctx context.Context) error    { return t.Setup(ctx) }
func (t localTarget) teardown(ctx context.Context) error { return t.Teardown(ctx) }
func (t localTarget) inPlace() bool                      { return false }
func (t localTarget) overlay() bool                      { return t.Isolation == local.Netns }
func (t localTarget) isolation() string                  { return string(t.Isolation) }
func (t localTarget) release()                           {}
func (t localTarget) logHint() string {
	return "logs in " + state.Dir{Path: t.stateDir}.NodeDir("<node>") + "/clusterd.log"
}

func (t localTarget) assign(n *state.Node, others []state.Node) error {
	ip, err := local.Allocate(t.Prefix(), used(others))
	n.IP = ip
	return err
}

func (t localTarget) machineID(_ context.Context, n state.Node) (string, error) {
	return registry.ReadMachineID(state.Dir{Path: t.stateDir}.NodeDir(n.Name))
}

// target sets up the cluster's provider: for local, with the isolation the
// cluster was made with (or the best available for a new one).
func (c *cluster) target(ctx context.Context) (target, error) {
	if c.tgt != nil {
		return c.tgt, nil
	}
	switch c.cfg.Provider.Type {
	case "local":
		p, err := c.localProvider()
		if err != nil {
			return nil, err
		}
		c.tgt = localTarget{Provider: p, stateDir: c.dir.Path}
	case "ssh":
		t, err := c.sshTarget()
		if err != nil {
			return nil, err
		}
		c.tgt = t
	case "pxe":
		t, err := c.pxeTarget()
		if err != nil {
			return nil, err
		}
		c.tgt = t
	case "aws":
		t, err := c.awsTarget(ctx)
		if err != nil {
			return nil, err
		}
		c.tgt = t
	case "vagrant":
		t, err := c.vagrantTarget(ctx, true)
		if err != nil {
			return nil, err
		}
		c.tgt = t
	default:
		return nil, fmt.Errorf("provider %q cannot run clusters yet", c.cfg.Provider.Type)
	}
	return c.tgt, nil
}

func (c *cluster) localProvider() (*local.Provider, error) {
	bin, err := c.binary()
	if err != nil {
		return nil, err
	}
	iso := local.Isolation(c.state.Isolation)
	if iso == "" {
		var why error
		if iso, why = local.Detect(); why != nil {
			fmt.Fprintf(c.opts.Err, "note: no network namespaces (%v); nodes will run on loopback addresses in %s\n", why, local.LoopbackPrefix)
		}
	} else if iso == local.Netns {
		if err := local.Check(); err != nil {
			return nil, fmt.Errorf("cluster %q was made with network namespaces, which this process can't manage: %w", c.cfg.Cluster.Name, err)
		}
	}
	c.local = &local.Provider{
		Cluster: c.cfg.Cluster.Name, CIDR: c.cfg.Provider.Local.CIDR, Isolation: iso,
		Binary: bin, StateDir: c.dir.Path,
	}
	return c.local, nil
}

// binary is the corral binary that nodes run as clusterd.
func (c *cluster) binary() (string, error) {
	if c.opts.Binary != "" {
		return c.opts.Binary, nil
	}
	return os.Executable()
}
