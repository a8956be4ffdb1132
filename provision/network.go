package provision

import (
	"context"
	"fmt"
	"time"

	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"github.com/corral-dev/corral/provision/config"
	"github.com/corral-dev/corral/provision/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// networkConfig turns the HCL network block into flannel's config.
func networkConfig(n *config.Network) *subnet.Config {
	return &subnet.Config{
		Network:   n.CIDR,
		SubnetLen: n.SubnetLen,
		Backend:   subnet.BackendConfig{Type: n.Backend, VNI: n.VNI, Port: n.Port},
	}
}

// ensureNetwork writes the overlay's config (refused, with the running
// network untouched, if it conflicts with the leases in use) and waits
// until every node holds its subnet.
func (c *cluster) ensureNetwork(ctx context.Context, t target, timeout time.Duration) error {
	if c.cfg.Network == nil {
		return nil
	}
	if !t.overlay() {
		fmt.Fprintf(c.opts.Err, "note: the network block is ignored: nodes on loopback share one network namespace\n")
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cli, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	cfg := networkConfig(c.cfg.Network)
	if err := subnet.PutConfig(ctx, cli, cfg); err != nil {
		return fmt.Errorf("network %s: %w", c.cfg.Network.CIDR, err)
	}
	leases, err := waitLeases(ctx, cli, c.state)
	if err != nil {
		return fmt.Errorf("waiting for every node's subnet: %w", err)
	}
	fmt.Fprintf(c.opts.Out, "network %s (%s): %d subnets leased\n", cfg.Network, cfg.Backend.Type, len(leases))
	c.state.Network = c.networkDigest()
	return c.dir.Save(c.state)
}

// waitLeases waits, watching the leases, until every node of the state has
// one, and returns them.
func waitLeases(ctx context.Context, cli *clientv3.Client, st *state.State) ([]subnet.Lease, error) {
	want := map[string]bool{}
	for _, n := range st.Nodes {
		want[n.IP.String()] = true
	}
	done := make(chan []subnet.Lease, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go subnet.Watch(wctx, cli, func(leases []subnet.Lease) {
		held := 0
		for _, l := range leases {
			if want[l.PublicIP.String()] {
				held++
			}
		}
		if held == len(want) {
			select {
			case done <- leases:
			default:
			}
		}
	})
	select {
	case leases := <-done:
		return leases, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
