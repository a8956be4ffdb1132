package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/corral-dev/corral/bootstrap/join"
	"github.com/corral-dev/corral/clusterd/membership"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// runMembership keeps this machine's part in the cluster's membership: it
// records the machine in the index of known machines, runs the promoter on
// a client, and sends on removed once the machine has been removed for
// good (its tombstone appeared), which stops clusterd.
func (n *Node) runMembership(ctx context.Context, removed chan<- error) {
	c := n.Store.Client
	me := membership.Machine{ID: n.Machine.ID, Name: n.Machine.Name, IP: n.Machine.IP}
	tomb := c.Watch(ctx, membership.RemovedPrefix+me.ID)
	var gone bool
	if err := store.Retry(ctx, func() (err error) {
		if gone, err = membership.Removed(ctx, c, me.ID); err == nil && !gone {
			err = membership.Record(ctx, c, me)
		}
		return err
	}); err != nil && ctx.Err() == nil {
		n.cfg.Log.Warn("recording the machine in the membership index failed", "err", err)
	}
	if gone {
		removed <- fmt.Errorf("clusterd: machine %s (%s) was removed from the cluster for good (%s%s); give it a new data dir to join again",
			me.ID, me.Name, membership.RemovedPrefix, me.ID)
		return
	}
	if !n.Store.IsMember() {
		go n.promoteWhenWanted(ctx, me)
	}
	for resp := range tomb {
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypePut {
				removed <- fmt.Errorf("clusterd: machine %s (%s) was removed from the cluster (clusterctl machine remove, or scale-in); stopping", me.ID, me.Name)
				return
			}
		}
	}
}

// promoteWhenWanted runs the promoter and, once this machine is a voter,
// says so in its registration.
func (n *Node) promoteWhenWanted(ctx context.Context, me membership.Machine) {
	p := &membership.Promoter{Client: n.Store.Client, Machine: me, Promote: n.Store.Promote, Log: n.cfg.Log}
	if err := p.Run(ctx); err != nil || !n.Store.IsMember() {
		return
	}
	// A member admits joining nodes, as every other member does.
	if ca, err := n.sharedCA(ctx, nil); err != nil {
		n.cfg.Log.Warn("the promoted member can't serve the join endpoint", "err", err)
	} else {
		n.mux.Handle("/v1/join/", join.Handler(ca, n.cfg.Token, n.cfg.Log))
	}
	// The heartbeat holds the lease; rewrite the record under it.
	m := n.Machine
	m.Member = true
	b, _ := json.Marshal(m)
	c := n.Store.Client
	if err := store.Retry(ctx, func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := c.Put(rctx, registry.Prefix+m.ID, string(b), clientv3.WithIgnoreLease())
		return err
	}); err != nil && ctx.Err() == nil {
		n.cfg.Log.Warn("marking the machine a member in the registry failed", "err", err)
	}
}
