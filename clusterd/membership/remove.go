package membership

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"time"

	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// RemoveOptions tune Remove.
type RemoveOptions struct {
	// Report hears each step once it is done, as a line for the user.
	Report func(step string)
	// PromotionTimeout bounds the wait for a client to become a voter;
	// default one minute.
	PromotionTimeout time.Duration
	// Checked says the caller has already run CheckRemoval for a set of
	// removals this one belongs to.
	Checked bool
}

// Result says what a removal did.
type Result struct {
	WasVoter bool
	Promoted string // the machine promoted to voter in its place, if any
}

// Remove takes a machine out of the cluster for good, in the order the
// package documents, and leaves terminating it to the caller. It is safe
// to run again after it failed half-way: every step is skipped when
// already done.
func Remove(ctx context.Context, c *clientv3.Client, m Machine, opts RemoveOptions) (*Result, error) {
	report := opts.Report
	if report == nil {
		report = func(string) {}
	}
	if opts.PromotionTimeout == 0 {
		opts.PromotionTimeout = time.Minute
	}
	var s *Survey
	if err := store.Retry(ctx, func() (err error) { s, err = Take(ctx, c); return err }); err != nil {
		return nil, err
	}
	if !opts.Checked {
		if err := s.CheckRemoval([]Machine{m}); err != nil {
			return nil, err
		}
	}
	// The tombstone first: a clusterd still running on the machine (a
	// forced removal) stops instead of registering again, and clients
	// waiting to be promoted wake up.
	tomb := Tombstone{Machine: m, Removed: time.Now().UTC()}
	if err := store.Retry(ctx, func() error { return putTombstone(ctx, c, tomb) }); err != nil {
		return nil, err
	}
	res := &Result{}
	var err error
	if v, ok := s.Voter(m); ok {
		res.WasVoter = true
		// Requests go to the voters that stay: the leaving member's own
		// answer to its removal, and anything after, may be cut short as
		// it stops.
		if others := endpointsWithout(c.Endpoints(), v.IP); len(others) > 0 {
			c.SetEndpoints(others...)
		}
		if err := store.Retry(ctx, func() error { return store.RemoveMember(ctx, c, v.ID) }); err != nil {
			return nil, fmt.Errorf("removing %s's etcd member %x: %w", m.Name, v.ID, err)
		}
		tomb.VoterRemoved = true
		// The removed member stops answering: point the client at the
		// voters left, as a client does after joining.
		if err := store.Ready(ctx, c); err != nil {
			return nil, err
		}
		if err := store.Retry(ctx, func() error { return putTombstone(ctx, c, tomb) }); err != nil {
			return nil, err
		}
		left := len(s.Voters) - 1
		report(fmt.Sprintf("removed etcd member %x (%s); %d voters left", v.ID, m.Name, left))
		if res.Promoted, err = awaitPromotion(ctx, c, s, m, left, opts.PromotionTimeout); err != nil {
			return res, err
		}
		switch {
		case res.Promoted != "":
			report(fmt.Sprintf("promoted %s to etcd voter; %d voters", res.Promoted, left+1))
		case left < s.Desired:
			report(fmt.Sprintf("no client machine to promote: the cluster runs with %d etcd voters of the %d configured; "+
				"add a machine (raise desired_capacity, provision up) to restore them", left, s.Desired))
		}
	}
	l, err := subnet.Release(ctx, c, m.ID)
	switch {
	case err != nil:
		return res, fmt.Errorf("releasing %s's overlay subnet: %w", m.Name, err)
	case l != nil:
		report(fmt.Sprintf("released overlay subnet %s", l.Subnet))
	}
	gone, err := deregister(ctx, c, m.ID)
	if err != nil {
		return res, fmt.Errorf("removing %s's registration: %w", m.Name, err)
	}
	if gone {
		report(fmt.Sprintf("removed machine %s's registration: its units move to other machines", m.Short()))
	}
	if _, err := c.Delete(ctx, KnownPrefix+m.ID); err != nil {
		return res, err
	}
	return res, nil
}

func putTombstone(ctx context.Context, c *clientv3.Client, t Tombstone) error {
	b, _ := json.Marshal(t)
	if _, err := c.Put(ctx, RemovedPrefix+t.ID, string(b)); err != nil {
		return fmt.Errorf("marking %s removed: %w", t.Name, err)
	}
	return nil
}

// awaitPromotion waits until a client has replaced the removed voter, when
// the cluster wants one and has a client to give; it returns the name of
// the machine promoted, or "" when none was to be.
func awaitPromotion(ctx context.Context, c *clientv3.Client, s *Survey, removed Machine, left int, timeout time.Duration) (string, error) {
	candidates := map[string]string{} // IP → name
	for _, cl := range s.Clients {
		if cl.IP != removed.IP {
			candidates[cl.IP] = cl.Name
		}
	}
	if left >= s.Desired || len(candidates) == 0 {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// etcd has no watch on its member list: poll it.
	for {
		list, err := c.MemberList(ctx)
		if err == nil {
			voters, promoted := 0, ""
			for _, mm := range list.Members {
				if mm.IsLearner {
					continue
				}
				voters++
				if name, ok := candidates[PeerIP(mm)]; ok {
					promoted = name
				}
			}
			if voters > left && promoted != "" {
				return promoted, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no client machine was promoted to etcd voter within %s (the cluster has %d voters of the %d configured); "+
				"see the clients' clusterd logs, then run the removal again: it carries on where it stopped", timeout, left, s.Desired)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// deregister drops a machine's registration now, revoking its lease, rather
// than waiting for the lease to expire; gone says there was one.
func deregister(ctx context.Context, c *clientv3.Client, machineID string) (bool, error) {
	resp, err := c.Get(ctx, registry.Prefix+machineID)
	if err != nil || len(resp.Kvs) == 0 {
		return false, err
	}
	if lease := clientv3.LeaseID(resp.Kvs[0].Lease); lease != 0 {
		if _, err := c.Revoke(ctx, lease); err == nil {
			return true, nil
		}
	}
	_, err = c.Delete(ctx, registry.Prefix+machineID)
	return err == nil, err
}

// Alive reports whether the machine's registration lease is held: its
// clusterd is heartbeating.
func Alive(ctx context.Context, c *clientv3.Client, machineID string) (bool, error) {
	resp, err := c.Get(ctx, registry.Prefix+machineID, clientv3.WithCountOnly())
	if err != nil {
		return false, err
	}
	return resp.Count > 0, nil
}

// endpointsWithout is endpoints (URLs) less those on host ip.
func endpointsWithout(endpoints []string, ip string) []string {
	var out []string
	for _, e := range endpoints {
		if u, err := url.Parse(e); err != nil || !sameIP(u.Hostname(), ip) {
			out = append(out, e)
		}
	}
	return out
}
