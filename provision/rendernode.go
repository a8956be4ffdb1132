package provision

import (
	"cmp"
	"context"
	"fmt"

	"github.com/corral-dev/corral/provision/plan"
	"github.com/corral-dev/corral/provision/state"
	"github.com/corral-dev/corral/templates"
)

// RenderOptions tune `provision render`.
type RenderOptions struct {
	Options
	Node   string
	Format string // "" means the node group's userdata
}

// RenderNode prints the boot config of a node the state has, or of one the
// plan would create (with the address it would get).
func RenderNode(ctx context.Context, opts RenderOptions) error {
	c, err := open(opts.Options)
	if err != nil {
		return err
	}
	switch opts.Format {
	case "dnsmasq":
		if c.cfg.Provider.Type != "pxe" {
			return fmt.Errorf("--format dnsmasq is for provider \"pxe\"; %s has provider %q", opts.File, c.cfg.Provider.Type)
		}
		b, err := c.dnsmasqConfig()
		if err != nil {
			return err
		}
		_, err = c.opts.Out.Write(b)
		return err
	case "vagrantfile":
		if c.cfg.Provider.Type != "vagrant" {
			return fmt.Errorf("--format vagrantfile is for provider \"vagrant\"; %s has provider %q", opts.File, c.cfg.Provider.Type)
		}
		b, err := c.vagrantfile(ctx)
		if err != nil {
			return err
		}
		_, err = c.opts.Out.Write(b)
		return err
	}
	if opts.Node == "" {
		return fmt.Errorf("--node is needed for --format %s", cmp.Or(opts.Format, "ignition or cloud-config"))
	}
	t, err := c.target(ctx)
	if err != nil {
		return err
	}
	n := c.state.Node(opts.Node)
	if n == nil {
		if n, err = c.plannedNode(ctx, t, opts.Node); err != nil {
			return err
		}
	}
	g := c.group(n.Group)
	if g == nil {
		return fmt.Errorf("node %s: its group %q is no longer in %s", n.Name, n.Group, opts.File)
	}
	format := templates.Format(opts.Format)
	if format == "" {
		format = g.Userdata
	}
	boot, err := c.bootNode(*n)
	if err != nil {
		return err
	}
	out, err := templates.Render(boot, format)
	if err != nil {
		return err
	}
	_, err = c.opts.Out.Write(out)
	return err
}

// plannedNode is a node the plan would create, as it would be recorded.
func (c *cluster) plannedNode(ctx context.Context, t target, name string) (*state.Node, error) {
	pl, err := c.planWith(nil, t.inPlace())
	if err != nil {
		return nil, err
	}
	var names []string
	for _, n := range c.state.Nodes {
		names = append(names, n.Name)
	}
	for _, ch := range pl.Changes {
		if ch.Kind != plan.Node {
			continue
		}
		switch {
		case ch.Action == plan.Create && ch.Name == name:
			return c.newNode(t, name, ch.Group, "")
		case ch.Action == plan.Replace && ch.Replacement == name:
			return c.newNode(t, name, ch.Group, ch.Name)
		case ch.Action == plan.Create:
			names = append(names, ch.Name)
		}
	}
	return nil, fmt.Errorf("no node %q: the cluster has %v and the plan creates no such node", name, names)
}
