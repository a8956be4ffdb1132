package provision

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/corral-dev/corral/clusterd/membership"
	"github.com/corral-dev/corral/clusterd/store"
	"github.com/corral-dev/corral/provision/plan"
	"github.com/corral-dev/corral/provision/state"
)

// putMembership writes the cluster's membership settings (etcd_members)
// where clusterd watches them: the clients then keep the voters at that
// count by promotion when a voter is removed.
func (a *apply) putMembership(ctx context.Context) error {
	if len(a.c.state.Members()) == 0 {
		return nil // no cluster to write to (every node scaled away)
	}
	cli, err := a.client(ctx)
	if err != nil {
		return err
	}
	set := membership.Settings{Voters: a.c.cfg.Cluster.EtcdMembers}
	if err := store.Retry(ctx, func() error { return membership.PutSettings(ctx, cli, set) }); err != nil {
		return fmt.Errorf("writing the membership settings: %w", err)
	}
	return nil
}

// checkRemovals refuses, before any node goes, a plan whose deletions
// would cost the etcd quorum (see membership.Survey.CheckRemoval).
func (a *apply) checkRemovals(ctx context.Context, pl *plan.Plan) error {
	var going []membership.Machine
	for _, ch := range pl.Of(plan.Node, plan.Delete) {
		if n := a.c.state.Node(ch.Name); n != nil {
			going = append(going, a.machineOf(ctx, *n))
		}
	}
	if len(going) == 0 {
		return nil
	}
	cli, err := a.client(ctx)
	if err != nil {
		return err
	}
	var s *membership.Survey
	if err := store.Retry(ctx, func() (err error) { s, err = membership.Take(ctx, cli); return err }); err != nil {
		return err
	}
	if err := s.CheckRemoval(going); err != nil {
		return fmt.Errorf("%w; nothing was removed", err)
	}
	return nil
}

// machineOf is the node as the membership package knows it; the id is
// empty when the node never booted far enough to have one. A target that
// can't read the id from the machine (aws) has it looked up in the
// cluster's index of known machines, under the name the node registered
// with (its instance id): without it the node would be taken for one that
// never booted, and terminated without leaving the cluster.
func (a *apply) machineOf(ctx context.Context, n state.Node) membership.Machine {
	id, err := a.t.machineID(ctx, n)
	if err != nil {
		if cli, cerr := a.client(ctx); cerr == nil {
			if m, ferr := membership.Find(ctx, cli, machineNameOf(a.t, n.Name)); ferr == nil {
				return m
			}
		}
	}
	return membership.Machine{ID: id, Name: n.Name, IP: n.IP.String()}
}

// leave takes a recorded node out of the cluster before it is terminated:
// etcd membership, promotion of a client in its place, overlay subnet,
// registration. A client promoted in its place becomes a member in the
// state, so later runs give new nodes the right role.
func (a *apply) leave(ctx context.Context, n state.Node) error {
	cli, err := a.client(ctx)
	if err != nil {
		return err
	}
	m := a.machineOf(ctx, n)
	if m.ID == "" {
		// Never booted: it has no registration or subnet, at most an etcd
		// member added for it.
		if n.Role != state.Member {
			return nil
		}
		return store.Retry(ctx, func() error { return removeMember(ctx, cli, n) })
	}
	res, err := membership.Remove(ctx, cli, m, membership.RemoveOptions{
		Checked:          true,
		PromotionTimeout: a.timeout,
		Report:           func(step string) { a.show.Set("node "+n.Name, "removing", step) },
	})
	if err != nil {
		return fmt.Errorf("removing %s from the cluster: %w; re-run `provision up` to carry on", n.Name, err)
	}
	for i, p := range a.c.state.Nodes {
		if res.Promoted != "" && machineNameOf(a.t, p.Name) == res.Promoted {
			a.c.state.Nodes[i].Role = state.Member
			return a.c.dir.Save(a.c.state)
		}
	}
	return nil
}

// followMembership brings the state in line with what changed in the
// cluster outside provision: a machine removed for good (`clusterctl
// machine remove`) is forgotten, so the plan neither starts it again nor
// counts it (the provider's leftovers of it are then found live but not
// recorded, and go); a client promoted to voter is recorded as a member,
// so new nodes get the right role. A cluster that does not answer within
// a few seconds (stopped, or not made yet) is taken as the state says.
func (c *cluster) followMembership(ctx context.Context, t target) error {
	if len(c.state.Members()) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cli, err := c.connect(ctx)
	if err != nil {
		return nil
	}
	defer cli.Close()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return nil
	}
	voters := map[string]bool{}
	for _, m := range list.Members {
		if !m.IsLearner && m.Name != "" {
			voters[membership.PeerIP(m)] = true
		}
	}
	changed := false
	for _, n := range slices.Clone(c.state.Nodes) {
		if id, err := t.machineID(ctx, n); err == nil {
			if gone, err := membership.Removed(ctx, cli, id); err == nil && gone {
				fmt.Fprintf(c.opts.Err, "note: %s was removed from the cluster for good (clusterctl machine remove); forgetting it\n", n.Name)
				c.state.Remove(n.Name)
				changed = true
				continue
			}
		}
		if n.Role == state.Client && voters[n.IP.String()] {
			c.state.Node(n.Name).Role = state.Member
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return c.dir.Save(c.state)
}
