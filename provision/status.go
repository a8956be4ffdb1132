package provision

import (
	"context"
	"fmt"
	"net/netip"
	"text/tabwriter"
	"time"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Status prints each node with its process, its machine record and its
// etcd health, as seen right now.
func Status(ctx context.Context, opts Options) error {
	c, err := open(opts)
	if err != nil {
		return err
	}
	if len(c.state.Nodes) == 0 {
		fmt.Fprintf(c.opts.Out, "cluster %q has no nodes; run `provision up %s`\n", c.cfg.Cluster.Name, opts.File)
		return nil
	}
	p, err := c.target(ctx)
	if err != nil {
		return err
	}
	insts, err := p.Inventory(ctx)
	if err != nil {
		return err
	}
	process := map[string]string{}
	for _, in := range insts {
		process[in.Name] = in.Detail
	}
	machines := map[string]registry.Machine{}
	health := map[string]string{}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cli, err := c.connect(ctx)
	if err != nil {
		cli = nil
	} else {
		defer cli.Close()
		if ms, _, lerr := registry.List(ctx, cli); lerr == nil {
			for _, m := range ms {
				machines[m.Name] = m
			}
		} else {
			err = lerr
		}
	}
	for _, n := range c.state.Members() {
		health[n.Name] = memberHealth(ctx, cli, n.IP)
	}
	tw := tabwriter.NewWriter(c.opts.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tIP\tROLE\tPROCESS\tMACHINE\tETCD")
	for _, n := range c.state.Nodes {
		mid := "-"
		if m, ok := machines[machineNameOf(p, n.Name)]; ok {
			mid = m.ID[:8] + "…"
		}
		h := health[n.Name]
		if h == "" {
			h = "-"
		}
		proc := process[n.Name]
		if proc == "" {
			proc = "missing"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.IP, n.Role, proc, mid, h)
	}
	tw.Flush()
	if err != nil {
		fmt.Fprintf(c.opts.Out, "\ncluster unreachable: %v\n", err)
	} else {
		printClusterMetrics(ctx, c.opts.Out, cli, c.state.Nodes, c.state.Members())
	}
	printBackupStatus(ctx, c, cli)
	return nil
}

// memberHealth asks one member for its status.
func memberHealth(ctx context.Context, cli *clientv3.Client, ip netip.Addr) string {
	if cli == nil {
		return "unreachable"
	}
	st, err := cli.Status(ctx, store.ClientURL(ip.AsSlice(), 0))
	if err != nil {
		return "unhealthy: " + err.Error()
	}
	if st.Header.MemberId == st.Leader {
		return "healthy (leader)"
	}
	return "healthy"
}
