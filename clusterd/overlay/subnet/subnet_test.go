package subnet_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"github.com/corral-dev/corral/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestKeys(t *testing.T) {
	p := pfx("10.1.42.0/24")
	if got, want := subnet.KeyFor(p), "/coreos.com/network/subnets/10.1.42.0-24"; got != want {
		t.Errorf("KeyFor(%s) = %q, want %q", p, got, want)
	}
	if got, err := subnet.ParseKey(subnet.KeyFor(p)); err != nil || got != p {
		t.Errorf("ParseKey(KeyFor(%s)) = %v, %v", p, got, err)
	}
	for _, key := range []string{
		"10.1.42.0-24", // no prefix
		"/coreos.com/network/subnets/10.1.42.0",
		"/coreos.com/network/subnets/10.1.42.0-",
		"/coreos.com/network/subnets/10.1.42.0-33",
		"/coreos.com/network/subnets/10.1.42.0-024",
		"/coreos.com/network/subnets/10.1.42.1-24", // host bits
		"/coreos.com/network/subnets/fd00::-64",
		"/coreos.com/network/subnets/nonsense-24",
	} {
		if p, err := subnet.ParseKey(key); err == nil {
			t.Errorf("ParseKey(%q) = %v, want an error", key, p)
		}
	}
}

// put writes cfg or fails the test.
func put(t *testing.T, c *clientv3.Client, cfg *subnet.Config) {
	t.Helper()
	if err := subnet.PutConfig(t.Context(), c, cfg); err != nil {
		t.Fatalf("PutConfig(%+v): %v", *cfg, err)
	}
}

// acquire acquires a lease for id with a public IP made from n, or fails the
// test.
func acquire(t *testing.T, c *clientv3.Client, cfg *subnet.Config, id string, n int) *subnet.Lease {
	t.Helper()
	l, err := subnet.Acquire(t.Context(), c, cfg, id, publicIP(n), "", nil)
	if err != nil {
		t.Fatalf("Acquire(%s): %v", id, err)
	}
	return l
}

func publicIP(n int) netip.Addr { return netip.AddrFrom4([4]byte{192, 168, byte(n >> 8), byte(n)}) }

// list returns the leases in etcd, or fails the test.
func list(t *testing.T, c *clientv3.Client) []subnet.Lease {
	t.Helper()
	ls, _, err := subnet.List(t.Context(), c)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return ls
}

func TestGetConfig(t *testing.T) {
	c := etcdtest.Start(t)
	ctx := t.Context()
	_, rev, err := subnet.GetConfig(ctx, c)
	if !errors.Is(err, subnet.ErrNoConfig) || err.Error() != "no network config at /coreos.com/network/config" {
		t.Fatalf("GetConfig before PutConfig = %v, want ErrNoConfig", err)
	}
	if rev == 0 {
		t.Error("GetConfig without a config returned revision 0; want the read's revision")
	}

	cfg := &subnet.Config{Network: pfx("10.1.0.0/16")}
	put(t, c, cfg)
	got, rev1, err := subnet.GetConfig(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := subnet.ParseConfig([]byte(`{"Network":"10.1.0.0/16"}`))
	if *got != *want {
		t.Errorf("GetConfig = %+v, want %+v (defaults filled in)", *got, *want)
	}
	// What is stored is the config with its defaults, so that every reader,
	// flannel included, sees the same subnets whatever its own defaults.
	resp, err := c.Get(ctx, subnet.ConfigKey)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(resp.Kvs[0].Value), `{"Network":"10.1.0.0/16","SubnetLen":24,"SubnetMin":"10.1.1.0","SubnetMax":"10.1.255.0","Backend":{"Type":"vxlan","VNI":1}}`; got != want {
		t.Errorf("stored config = %s, want %s", got, want)
	}

	// Idempotent: the same config again writes nothing.
	put(t, c, cfg)
	if _, rev2, err := subnet.GetConfig(ctx, c); err != nil || rev2 != rev1 {
		t.Errorf("after PutConfig of the same config, revision %d -> %d (err %v); want no write", rev1, rev2, err)
	}

	if _, err := c.Put(ctx, subnet.ConfigKey, `{"Network":"10.1.0.0/16","SubnetLen":40}`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := subnet.GetConfig(ctx, c); !errors.Is(err, subnet.ErrInvalidConfig) || !strings.Contains(err.Error(), subnet.ConfigKey) {
		t.Errorf("GetConfig of a bad config = %v, want ErrInvalidConfig naming the key", err)
	}
}

func TestPutConfigRefusesIncompatible(t *testing.T) {
	c := etcdtest.Start(t)
	ctx := t.Context()
	old := &subnet.Config{Network: pfx("10.1.0.0/16")}
	put(t, c, old)
	for i := range 3 {
		acquire(t, c, old, fmt.Sprintf("m%d", i), i)
	}
	before, err := c.Get(ctx, subnet.ConfigKey)
	if err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		cfg  subnet.Config
		want string
	}{
		{subnet.Config{Network: pfx("10.2.0.0/16")}, "3 leases (10.1."},
		{subnet.Config{Network: pfx("10.2.0.0/16")}, "lie outside 10.2.0.0/16"},
		{subnet.Config{Network: pfx("10.1.0.0/16"), SubnetLen: 25}, "3 leases"},
		// The leases are random subnets of 10.1.0.0/16, above 10.1.0.0.
		{subnet.Config{Network: pfx("10.1.0.0/16"), SubnetMax: addr("10.1.0.0"), SubnetMin: addr("10.1.0.0")}, "3 leases"},
	} {
		err := subnet.PutConfig(ctx, c, &tt.cfg)
		if !errors.Is(err, subnet.ErrIncompatibleConfig) || !strings.Contains(err.Error(), tt.want) ||
			!strings.Contains(err.Error(), "release them first") {
			t.Errorf("PutConfig(%+v) = %v, want ErrIncompatibleConfig containing %q", tt.cfg, err, tt.want)
		}
	}
	after, err := c.Get(ctx, subnet.ConfigKey)
	if err != nil {
		t.Fatal(err)
	}
	if after.Kvs[0].ModRevision != before.Kvs[0].ModRevision || string(after.Kvs[0].Value) != string(before.Kvs[0].Value) {
		t.Errorf("config changed by refused PutConfigs: %s -> %s", before.Kvs[0].Value, after.Kvs[0].Value)
	}

	// Compatible changes go through: a wider network with the same subnet
	// length holds every lease, and backend settings do not affect them.
	wider := &subnet.Config{Network: pfx("10.0.0.0/8"), Backend: subnet.BackendConfig{Type: "vxlan", Port: 4789}}
	put(t, c, wider)
	if got, _, err := subnet.GetConfig(ctx, c); err != nil || got.Network != wider.Network || got.Backend.Port != 4789 {
		t.Errorf("after a compatible PutConfig, GetConfig = %+v, %v", got, err)
	}
	if n := len(list(t, c)); n != 3 {
		t.Errorf("%d leases after a compatible PutConfig, want 3", n)
	}

	// Once the leases are released, anything goes.
	for i := range 3 {
		if _, err := subnet.Release(ctx, c, fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	put(t, c, &subnet.Config{Network: pfx("10.2.0.0/16")})
}

// An Acquire with a config that is no longer the one in etcd must not
// allocate from it: PutConfig checked the leases against the new one.
func TestAcquireRefusesStaleConfig(t *testing.T) {
	c := etcdtest.Start(t)
	stale := &subnet.Config{Network: pfx("10.1.0.0/16")}
	put(t, c, stale)
	put(t, c, &subnet.Config{Network: pfx("10.2.0.0/16")})
	_, err := subnet.Acquire(t.Context(), c, stale, "m1", publicIP(1), "", nil)
	if !errors.Is(err, subnet.ErrConfigChanged) {
		t.Fatalf("Acquire with a stale config = %v, want ErrConfigChanged", err)
	}
	if ls := list(t, c); len(ls) != 0 {
		t.Errorf("leases after a refused Acquire: %v", ls)
	}
}

func TestAcquireConcurrentExhaustion(t *testing.T) {
	c := etcdtest.Start(t)
	ctx := t.Context()
	cfg := &subnet.Config{Network: pfx("10.1.0.0/20"), SubnetLen: 24, SubnetMin: addr("10.1.0.0")}
	put(t, c, cfg)
	cfg, _, err := subnet.GetConfig(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	// Count the subnets from SubnetMin to SubnetMax: 10.1.0.0 to 10.1.15.0.
	subnets := 0
	for a := cfg.SubnetMin; !cfg.SubnetMax.Less(a); a = netip.AddrFrom4([4]byte{a.As4()[0], a.As4()[1], a.As4()[2] + 1, 0}) {
		subnets++
	}
	const machines = 20
	if subnets != 16 {
		t.Fatalf("10.1.0.0/20 from %s to %s holds %d /24s, want 16", cfg.SubnetMin, cfg.SubnetMax, subnets)
	}
	t.Logf("%d machines acquire at once from %d subnets", machines, subnets)

	var (
		wg     sync.WaitGroup
		start  = make(chan struct{})
		leases = make([]*subnet.Lease, machines)
		errs   = make([]error, machines)
	)
	for i := range machines {
		wg.Go(func() {
			<-start
			leases[i], errs[i] = subnet.Acquire(ctx, c, cfg, fmt.Sprintf("machine-%02d", i), publicIP(i), "vxlan",
				json.RawMessage(fmt.Sprintf(`{"VtepMAC":"02:00:00:00:00:%02x"}`, i)))
		})
	}
	close(start)
	wg.Wait()

	won := map[string]*subnet.Lease{}
	bySubnet := map[netip.Prefix]string{}
	exhausted := 0
	for i := range machines {
		id := fmt.Sprintf("machine-%02d", i)
		switch err := errs[i]; {
		case err == nil:
			l := leases[i]
			if other, dup := bySubnet[l.Subnet]; dup {
				t.Errorf("%s and %s both got %s", other, id, l.Subnet)
			}
			bySubnet[l.Subnet] = id
			won[id] = l
		case errors.Is(err, subnet.ErrExhausted):
			exhausted++
			const want = "network 10.1.0.0/20 is exhausted: all 16 /24 subnets are leased; release some (clusterctl net release MACHINE) or widen the network"
			if err.Error() != want {
				t.Errorf("%s: error %q, want %q", id, err, want)
			}
		default:
			t.Errorf("%s: unexpected error %v", id, err)
		}
	}
	if len(won) != subnets || exhausted != machines-subnets {
		t.Errorf("%d acquired and %d exhausted, want %d and %d", len(won), exhausted, subnets, machines-subnets)
	}

	stored := list(t, c)
	if len(stored) != len(won) {
		t.Errorf("%d leases in etcd, want %d", len(stored), len(won))
	}
	for _, l := range stored {
		w := won[l.MachineID]
		if w == nil {
			t.Errorf("lease %s in etcd for %q, which did not acquire it", l.Subnet, l.MachineID)
			continue
		}
		if l.Subnet != w.Subnet || l.PublicIP != w.PublicIP || l.BackendType != "vxlan" || string(l.BackendData) != string(w.BackendData) {
			t.Errorf("lease in etcd %+v, Acquire returned %+v", l, *w)
		}
		idx, err := c.Get(ctx, subnet.MachinePrefix+l.MachineID)
		if err != nil {
			t.Fatal(err)
		}
		if len(idx.Kvs) != 1 || string(idx.Kvs[0].Value) != subnet.KeyFor(l.Subnet) {
			t.Errorf("index of %s = %v, want %s", l.MachineID, idx.Kvs, subnet.KeyFor(l.Subnet))
		}
	}
}

func TestAcquireSameMachine(t *testing.T) {
	c := etcdtest.Start(t)
	ctx := t.Context()
	cfg := &subnet.Config{Network: pfx("10.1.0.0/16")}
	put(t, c, cfg)

	first := acquire(t, c, cfg, "m1", 1)
	again := acquire(t, c, cfg, "m1", 1)
	if again.Subnet != first.Subnet {
		t.Errorf("second Acquire gave %s, first %s", again.Subnet, first.Subnet)
	}

	// A machine back with a new address keeps its subnet, and its lease
	// says where it is now.
	_, rev, err := subnet.List(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	moved, err := subnet.Acquire(ctx, c, cfg, "m1", publicIP(99), "host-gw", nil)
	if err != nil {
		t.Fatal(err)
	}
	ls := list(t, c)
	if moved.Subnet != first.Subnet || len(ls) != 1 || ls[0].PublicIP != publicIP(99) || ls[0].BackendType != "host-gw" {
		t.Errorf("after Acquire with a new IP: returned %+v, leases %+v; want %s updated in place", *moved, ls, first.Subnet)
	}
	// Nothing changed since, so nothing is written.
	acquireSame, err := subnet.Acquire(ctx, c, cfg, "m1", publicIP(99), "host-gw", nil)
	if err != nil || acquireSame.Subnet != first.Subnet {
		t.Fatalf("Acquire = %v, %v", acquireSame, err)
	}
	if _, rev2, err := subnet.List(ctx, c); err != nil || rev2 != rev+1 {
		t.Errorf("revision %d after the update and an unchanged Acquire, want %d (one write)", rev2, rev+1)
	}

	// Concurrently, a machine still gets one subnet.
	var wg sync.WaitGroup
	start := make(chan struct{})
	got := make([]netip.Prefix, 10)
	for i := range got {
		wg.Go(func() {
			<-start
			l, err := subnet.Acquire(ctx, c, cfg, "m2", publicIP(2), "", nil)
			if err != nil {
				t.Errorf("Acquire(m2): %v", err)
				return
			}
			got[i] = l.Subnet
		})
	}
	close(start)
	wg.Wait()
	for _, p := range got {
		if p != got[0] {
			t.Errorf("concurrent Acquires for m2 gave %v, want one subnet", got)
			break
		}
	}
	if ls := list(t, c); len(ls) != 2 {
		t.Errorf("leases %+v, want one each for m1 and m2", ls)
	}
}

func TestReleaseFreesTheSubnet(t *testing.T) {
	c := etcdtest.Start(t)
	ctx := t.Context()
	// One subnet only, so that who gets it is not left to chance.
	cfg := &subnet.Config{Network: pfx("10.9.0.0/24"), SubnetLen: 26, SubnetMin: addr("10.9.0.64"), SubnetMax: addr("10.9.0.64")}
	put(t, c, cfg)
	held := acquire(t, c, cfg, "m1", 1)
	if _, err := subnet.Acquire(ctx, c, cfg, "m2", publicIP(2), "", nil); !errors.Is(err, subnet.ErrExhausted) {
		t.Fatalf("Acquire(m2) with the only subnet held = %v, want ErrExhausted", err)
	}

	released, err := subnet.Release(ctx, c, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if released == nil || released.Subnet != held.Subnet || released.MachineID != "m1" {
		t.Errorf("Release(m1) = %+v, want the lease on %s", released, held.Subnet)
	}
	if ls := list(t, c); len(ls) != 0 {
		t.Errorf("leases after Release: %+v", ls)
	}
	if idx, err := c.Get(ctx, subnet.MachinePrefix, clientv3.WithPrefix()); err != nil || len(idx.Kvs) != 0 {
		t.Errorf("index keys after Release: %v (%v)", idx.Kvs, err)
	}
	// Releasing nothing is not an error.
	if l, err := subnet.Release(ctx, c, "m1"); l != nil || err != nil {
		t.Errorf("second Release(m1) = %v, %v; want nil, nil", l, err)
	}

	if l := acquire(t, c, cfg, "m2", 2); l.Subnet != held.Subnet {
		t.Errorf("Acquire(m2) after the release = %s, want %s", l.Subnet, held.Subnet)
	}
}

// A lease that carries the machine's id but has no index key (written by
// hand, or by an older tool) is the machine's: Acquire adopts it rather
// than giving the machine a second subnet, and Release removes it.
func TestAcquireAdoptsUnindexedLease(t *testing.T) {
	c := etcdtest.Start(t)
	ctx := t.Context()
	cfg := &subnet.Config{Network: pfx("10.1.0.0/16")}
	put(t, c, cfg)
	key := subnet.KeyFor(pfx("10.1.77.0/24"))
	if _, err := c.Put(ctx, key, `{"PublicIP":"192.168.0.7","BackendType":"vxlan","MachineID":"m7"}`); err != nil {
		t.Fatal(err)
	}
	// flannel's leases, and garbage, occupy their subnets too.
	if _, err := c.Put(ctx, subnet.KeyFor(pfx("10.1.78.0/24")), `{"PublicIP":"192.168.0.8","BackendType":"vxlan","BackendData":{"VtepMAC":"02:00:00:00:00:08"}}`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, subnet.KeyFor(pfx("10.1.79.0/24")), `not json`); err != nil {
		t.Fatal(err)
	}

	l := acquire(t, c, cfg, "m7", 7)
	if l.Subnet != pfx("10.1.77.0/24") {
		t.Errorf("Acquire(m7) = %s, want its unindexed lease 10.1.77.0/24", l.Subnet)
	}
	idx, err := c.Get(ctx, subnet.MachinePrefix+"m7")
	if err != nil || len(idx.Kvs) != 1 || string(idx.Kvs[0].Value) != key {
		t.Errorf("index of m7 after adoption = %v (%v), want %s", idx.Kvs, err, key)
	}
	ls := list(t, c)
	if len(ls) != 2 || ls[0].Subnet != pfx("10.1.77.0/24") || ls[1].MachineID != "" ||
		string(ls[1].BackendData) != `{"VtepMAC":"02:00:00:00:00:08"}` {
		t.Errorf("List = %+v, want m7's lease and flannel's, without the garbage", ls)
	}
	if r, err := subnet.Release(ctx, c, "m7"); err != nil || r == nil || r.Subnet != l.Subnet {
		t.Errorf("Release(m7) = %+v, %v", r, err)
	}
}

func TestAcquireArguments(t *testing.T) {
	c := etcdtest.Start(t)
	ctx := context.Background()
	cfg := &subnet.Config{Network: pfx("10.1.0.0/16")}
	for _, tt := range []struct {
		id   string
		ip   netip.Addr
		data json.RawMessage
		cfg  *subnet.Config
	}{
		{"", publicIP(1), nil, cfg},
		{"a/b", publicIP(1), nil, cfg},
		{"m1", netip.Addr{}, nil, cfg},
		{"m1", addr("fd00::1"), nil, cfg},
		{"m1", publicIP(1), json.RawMessage(`{`), cfg},
		{"m1", publicIP(1), nil, &subnet.Config{Network: pfx("10.1.0.0/16"), SubnetLen: 31}},
	} {
		if l, err := subnet.Acquire(ctx, c, tt.cfg, tt.id, tt.ip, "", tt.data); err == nil {
			t.Errorf("Acquire(%q, %v, %s, %+v) = %+v, want an error", tt.id, tt.ip, tt.data, *tt.cfg, l)
		}
	}
	if ls := list(t, c); len(ls) != 0 {
		t.Errorf("leases after refused Acquires: %+v", ls)
	}
}
