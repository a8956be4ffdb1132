package subnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func leaseEvent(typ mvccpb.Event_EventType, subnet, machine string) *clientv3.Event {
	kv := &mvccpb.KeyValue{Key: []byte(KeyFor(netip.MustParsePrefix(subnet)))}
	if typ == mvccpb.PUT {
		kv.Value = fmt.Appendf(nil, `{"PublicIP":"192.168.0.1","BackendType":"vxlan","MachineID":%q}`, machine)
	}
	return &clientv3.Event{Type: typ, Kv: kv}
}

// Responses that are already waiting when follow gets to them are applied
// together and delivered once, as the newest set.
func TestFollowCoalesces(t *testing.T) {
	wch := make(chan clientv3.WatchResponse, 3)
	wch <- clientv3.WatchResponse{Events: []*clientv3.Event{leaseEvent(mvccpb.PUT, "10.1.1.0/24", "a")}}
	wch <- clientv3.WatchResponse{Events: []*clientv3.Event{leaseEvent(mvccpb.PUT, "10.1.2.0/24", "b")}}
	wch <- clientv3.WatchResponse{Events: []*clientv3.Event{
		leaseEvent(mvccpb.DELETE, "10.1.1.0/24", ""),
		leaseEvent(mvccpb.PUT, "10.1.3.0/24", "c"),
	}}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var calls [][]string
	deliver := func(set map[string]Lease) {
		var ids []string
		for _, l := range set {
			ids = append(ids, l.MachineID)
		}
		slices.Sort(ids)
		calls = append(calls, ids)
		cancel() // nothing more is coming; end follow after one batch
	}
	err := follow(ctx, wch, map[string]Lease{}, deliver)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("follow = %v, want context.Canceled", err)
	}
	if len(calls) != 1 || !slices.Equal(calls[0], []string{"b", "c"}) {
		t.Fatalf("deliveries %v, want one, of [b c]", calls)
	}
}

func TestFollowResyncs(t *testing.T) {
	compacted := make(chan clientv3.WatchResponse, 1)
	compacted <- clientv3.WatchResponse{CompactRevision: 5, Canceled: true}
	closed := make(chan clientv3.WatchResponse)
	close(closed)
	for name, wch := range map[string]chan clientv3.WatchResponse{"compacted": compacted, "closed": closed} {
		err := follow(t.Context(), wch, map[string]Lease{}, func(map[string]Lease) {
			t.Errorf("%s: delivered a set", name)
		})
		if !errors.Is(err, errResync) {
			t.Errorf("%s: follow = %v, want errResync", name, err)
		}
	}
}

func TestPickFree(t *testing.T) {
	cfg := Config{Network: netip.MustParsePrefix("10.1.0.0/20"), SubnetLen: 24, SubnetMin: netip.MustParseAddr("10.1.0.0")}.withDefaults()
	if n := cfg.count(); n != 16 {
		t.Fatalf("count = %d, want 16", n)
	}
	var leases []*mvccpb.KeyValue
	taken := map[netip.Prefix]bool{}
	// Fill the network one pick at a time: each pick must be free, and the
	// last one must find the only subnet left.
	for range 16 {
		p, err := pickFree(cfg, leases)
		if err != nil {
			t.Fatalf("pickFree with %d taken: %v", len(taken), err)
		}
		if taken[p] || !cfg.fits(p) {
			t.Fatalf("pickFree = %s: taken %v, fits %v", p, taken[p], cfg.fits(p))
		}
		taken[p] = true
		leases = append(leases, &mvccpb.KeyValue{Key: []byte(KeyFor(p))})
	}
	// Keys outside the range do not count; keys in it exhaust it.
	leases = append(leases, &mvccpb.KeyValue{Key: []byte(KeyFor(netip.MustParsePrefix("10.2.0.0/24")))})
	if _, err := pickFree(cfg, leases); !errors.Is(err, ErrExhausted) {
		t.Errorf("pickFree with all taken = %v, want ErrExhausted", err)
	}
}
