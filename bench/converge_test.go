package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"github.com/corral-dev/corral/internal/clustertest"
	"github.com/corral-dev/corral/internal/hostnet"
	"github.com/corral-dev/corral/providers/local"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// BenchmarkOverlayConvergence times how long a change in the set of leases
// takes to reach the kernel of another machine: from a new lease's write to
// its route on core-1, and from its release to the route's removal. The
// baseline is etcd's own watch latency (write to watch event), measured on
// the same writes: the overlay can't be faster than that.
func BenchmarkOverlayConvergence(b *testing.B) {
	c := clustertest.Start(b, clustertest.Options{Nodes: 2, EtcdMembers: 1, Network: `cidr = "10.220.0.0/16"`})
	ctx := context.Background()
	cfg, _, err := subnet.GetConfig(ctx, c.Admin)
	if err != nil {
		b.Fatal(err)
	}
	ns, err := netns.GetFromName((&local.Provider{Cluster: c.Name}).Namespace("core-1"))
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	h, err := hostnet.Handle((&local.Provider{Cluster: c.Name}).Namespace("core-1"))
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	routes := make(chan netlink.RouteUpdate, 256)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.RouteSubscribeAt(ns, routes, done); err != nil {
		b.Fatal(err)
	}
	watch := c.Admin.Watch(ctx, subnet.SubnetPrefix, clientv3.WithPrefix())

	// waitRoute waits for the route to dst to be added (or deleted).
	waitRoute := func(dst netip.Prefix, added bool) time.Time {
		want := uint16(0x18) // RTM_NEWROUTE
		if !added {
			want = 0x19 // RTM_DELROUTE
		}
		timeout := time.After(30 * time.Second)
		for {
			select {
			case u := <-routes:
				if u.Type == want && u.Dst != nil && u.Dst.String() == dst.String() {
					return time.Now()
				}
			case <-timeout:
				b.Fatalf("route to %s (added=%v) never changed", dst, added)
			}
		}
	}
	waitWatch := func() time.Time {
		<-watch
		return time.Now()
	}
	// A peer's VTEP data: the route goes in whatever the peer's address.
	data, _ := json.Marshal(map[string]any{"VNI": 1, "VtepMAC": "02:42:ac:11:00:99"})
	var add, del, etcdAdd, etcdDel time.Duration
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("%032x", 0xbe000+i)
		start := time.Now()
		lease, err := subnet.Acquire(ctx, c.Admin, cfg, id, netip.MustParseAddr("198.18.255.1"), "vxlan", data)
		if err != nil {
			b.Fatal(err)
		}
		etcdAdd += waitWatch().Sub(start)
		add += waitRoute(lease.Subnet, true).Sub(start)

		start = time.Now()
		if _, err := subnet.Release(ctx, c.Admin, id); err != nil {
			b.Fatal(err)
		}
		etcdDel += waitWatch().Sub(start)
		del += waitRoute(lease.Subnet, false).Sub(start)
	}
	n := time.Duration(b.N)
	b.ReportMetric(float64((add/n).Microseconds())/1000, "ms-lease-to-route")
	b.ReportMetric(float64((del/n).Microseconds())/1000, "ms-release-to-unroute")
	b.ReportMetric(float64(add)/float64(etcdAdd), "add/etcd-watch")
	b.ReportMetric(float64(del)/float64(etcdDel), "release/etcd-watch")
	b.Logf("lease → route on a peer: %v (%.1f× etcd's watch latency %v); release → route gone: %v (%.1f× %v)",
		add/n, float64(add)/float64(etcdAdd), etcdAdd/n, del/n, float64(del)/float64(etcdDel), etcdDel/n)
}
