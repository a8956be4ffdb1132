package provision

import (
	"context"
	"fmt"
)

// Serve keeps a pxe cluster's boot server up until ctx ends, so that its
// machines boot again after a power cut or a reboot: every node of the
// state is served as up left it.
func Serve(ctx context.Context, opts Options) error {
	c, err := open(opts)
	if err != nil {
		return err
	}
	if c.cfg.Provider.Type != "pxe" {
		return fmt.Errorf("serve is for provider \"pxe\"; %s has provider %q", opts.File, c.cfg.Provider.Type)
	}
	if _, err := c.ensurePKIExists(); err != nil {
		return err
	}
	t, err := c.target(ctx)
	if err != nil {
		return err
	}
	// Every machine is known before the server answers any.
	for _, n := range c.state.Nodes {
		spec, err := c.spec(t, n)
		if err != nil {
			return err
		}
		if err := t.Launch(ctx, spec); err != nil {
			return err
		}
	}
	if err := t.setup(ctx); err != nil {
		return err
	}
	defer t.release()
	fmt.Fprintf(c.opts.Out, "serving %d machines of cluster %q at %s; ^C to stop\n", len(c.state.Nodes), c.cfg.Cluster.Name, c.cfg.Provider.PXE.URL)
	<-ctx.Done()
	return nil
}

// ensurePKIExists says the cluster must have been brought up first.
func (c *cluster) ensurePKIExists() (bool, error) {
	if !c.dir.Exists() {
		return false, fmt.Errorf("cluster %q has no state yet; run `provision up %s` first", c.cfg.Cluster.Name, c.opts.File)
	}
	return true, nil
}

// Reprovision clears a bare-metal node's install-once record: at its next
// network boot it installs again instead of booting from its disk.
func Reprovision(opts Options, node string) error {
	c, err := open(opts)
	if err != nil {
		return err
	}
	lock, err := c.dir.Lock("reprovision")
	if err != nil {
		return err
	}
	defer lock.Unlock()
	n := c.state.Node(node)
	if n == nil {
		return fmt.Errorf("cluster %q has no node %q", c.cfg.Cluster.Name, node)
	}
	if n.Installed == nil {
		fmt.Fprintf(c.opts.Out, "%s has not installed to disk; it network-boots as it is\n", node)
		return nil
	}
	n.Installed = nil
	if err := c.dir.Save(c.state); err != nil {
		return err
	}
	fmt.Fprintf(c.opts.Out, "%s installs again at its next network boot, from the next `provision up` or `provision serve` (restart one that runs)\n", node)
	return nil
}
