package provision

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// DownOptions tune `provision down`.
type DownOptions struct {
	Options
	// ForceDeleteData deletes the data the cluster keeps beyond its
	// machines too: the aws provider's bucket of etcd snapshots.
	ForceDeleteData bool
}

// Down removes everything the cluster's runs made: every node the provider
// can find (by name, whether or not the state knows it), the cluster-wide
// resources, and the state directory.
func Down(ctx context.Context, opts Options) error {
	return DownWith(ctx, DownOptions{Options: opts})
}

// DownWith is Down with its options.
func DownWith(ctx context.Context, opts DownOptions) error {
	c, err := open(opts.Options)
	if err != nil {
		return err
	}
	lock, err := c.dir.Lock("down")
	if err != nil {
		return err
	}
	p, err := c.target(ctx)
	if err != nil {
		lock.Unlock()
		return err
	}
	found, err := p.Inventory(ctx)
	if err != nil {
		lock.Unlock()
		return err
	}
	// Every node is going and its data with it: there is no leadership to
	// hand over and no registration worth revoking, so stop them together
	// and at once (a clean etcd shutdown without quorum waits out timeouts).
	if c.local != nil {
		c.local.Grace = -1
	} else if s, ok := p.(*sshTarget); ok {
		s.Grace = -1 // clusterd gets the least the provider allows (1 s)
	} else if a, ok := p.(*awsTarget); ok {
		// The instances go with their Auto Scaling groups in teardown.
		a.down, a.forceDeleteData = true, opts.ForceDeleteData
	}
	var wg sync.WaitGroup
	var outMu sync.Mutex // Out is any writer, not one safe for concurrent use
	errs := make([]error, len(found))
	for i, inst := range found {
		wg.Go(func() {
			if errs[i] = p.Terminate(ctx, inst.Name); errs[i] == nil {
				outMu.Lock()
				fmt.Fprintf(c.opts.Out, "  - %s removed\n", inst.Name)
				outMu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		lock.Unlock()
		return err
	}
	if err := p.teardown(ctx); err != nil {
		lock.Unlock()
		return err
	}
	lock.Unlock()
	if err := c.dir.Remove(); err != nil {
		return err
	}
	fmt.Fprintf(c.opts.Out, "cluster %q removed (%d nodes)\n", c.cfg.Cluster.Name, len(found))
	return nil
}
