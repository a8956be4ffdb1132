package clustertest

import (
	"context"
	"time"

	"github.com/corral-dev/corral/clusterd/unitstore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// WaitUnits watches the unit records until cond holds, and returns the
// snapshot that satisfied it. The limit is generous: CI runs several
// clusters at once on two cores.
func (c *Cluster) WaitUnits(what string, cond func(*unitstore.Snapshot) bool) *unitstore.Snapshot {
	c.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		snap, err := unitstore.Read(ctx, c.Admin)
		if err != nil {
			c.T.Fatalf("waiting for %s: %v", what, err)
		}
		if cond(snap) {
			return snap
		}
		select {
		case <-c.Admin.Watch(ctx, "/corral/", clientv3.WithPrefix(), clientv3.WithRev(snap.Revision+1)):
		case <-ctx.Done():
			c.T.Fatalf("waiting for %s: %v", what, ctx.Err())
		}
	}
}
