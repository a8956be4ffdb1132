package metrics

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func put(t *testing.T, cli *clientv3.Client, key string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if _, err := cli.Put(context.Background(), key, string(b)); err != nil {
		t.Fatal(err)
	}
}

// seed writes three machines (two web), five units in every state, and
// three overlay leases, as clusterd's components write them.
func seed(t *testing.T, cli *clientv3.Client) {
	ctx := context.Background()
	for i, role := range []string{"web", "web", ""} {
		m := registry.Machine{ID: fmt.Sprintf("%032x", i+1), Name: fmt.Sprintf("core-%d", i+1), IP: "10.0.0.1"}
		if role != "" {
			m.Metadata = map[string]string{"role": role}
		}
		put(t, cli, registry.Prefix+m.ID, m)
		lease := subnet.Lease{PublicIP: netipMust("10.0.0.1"), BackendType: "vxlan", MachineID: m.ID}
		put(t, cli, subnet.SubnetPrefix+fmt.Sprintf("10.1.%d.0-24", i+1), lease)
	}
	m1, m2 := fmt.Sprintf("%032x", 1), fmt.Sprintf("%032x", 2)
	for _, u := range []struct {
		name, desired, machine, active string
		unscheduled                    bool
	}{
		{"a.service", unitstore.Launched, m1, "active", false},
		{"b.service", unitstore.Launched, m2, "active", false},
		{"c.service", unitstore.Launched, m2, "failed", false}, // assigned, not running: loaded
		{"d.service", unitstore.Loaded, m1, "", false},
		{"e.service", unitstore.Inactive, "", "", false},
		{"f.service", unitstore.Launched, "", "", true},
	} {
		if _, err := unitstore.Submit(ctx, cli, unitstore.UnitFile{Name: u.name, Hash: "h" + u.name, Content: "[Service]\nExecStart=/bin/true\n"}); err != nil {
			t.Fatal(err)
		}
		if err := unitstore.SetDesired(ctx, cli, u.name, u.desired); err != nil {
			t.Fatal(err)
		}
		if u.machine != "" {
			put(t, cli, unitstore.AssignKey(u.machine, u.name), unitstore.Assignment{Name: u.name, Desired: u.desired})
		}
		if u.active != "" {
			put(t, cli, unitstore.StateKey(u.machine, u.name), unitstore.UnitState{Name: u.name, Machine: u.machine, Active: u.active})
		}
		if u.unscheduled {
			put(t, cli, unitstore.PlacementPrefix+u.name, unitstore.Placement{Reason: "no machine has role=db"})
		}
	}
}

func TestRead(t *testing.T) {
	cli := etcdtest.Start(t)
	seed(t, cli)
	c, err := Read(context.Background(), cli)
	if err != nil {
		t.Fatal(err)
	}
	if c.MachineCount() != 3 || c.Machines["web"] != 2 || c.Machines[NoRole] != 1 {
		t.Errorf("machines %v, want web 2, none 1", c.Machines)
	}
	want := map[UnitKey]int{
		{unitstore.Launched, "active"}: 2,
		{unitstore.Loaded, "failed"}:   1,
		{unitstore.Loaded, NoState}:    1,
		{unitstore.Inactive, NoState}:  1,
		{Unscheduled, NoState}:         1,
	}
	if fmt.Sprint(c.Units) != fmt.Sprint(want) {
		t.Errorf("units %v, want %v", c.Units, want)
	}
	if c.EtcdMembers != 1 || c.EtcdVoters != 1 || c.OverlayLeases != 3 {
		t.Errorf("etcd %d/%d, leases %d; want 1/1 and 3", c.EtcdMembers, c.EtcdVoters, c.OverlayLeases)
	}
}

// TestServe scrapes a real /metrics endpoint and reads the series back
// with the same parser provision status uses.
func TestServe(t *testing.T) {
	cli := etcdtest.Start(t)
	seed(t, cli)
	overlay := true
	m := New(Options{Client: cli, LocalMember: func() string { return "" }, MachineID: fmt.Sprintf("%032x", 1),
		OverlayUp: func() bool { return overlay }})
	for _, d := range []time.Duration{2 * time.Millisecond, 3 * time.Millisecond, 900 * time.Millisecond} {
		m.Placed(d)
	}
	m.FailedOver(2)
	addr, err := Addr(":0", net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: m.Handler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	fams, err := Scrape(context.Background(), http.DefaultClient, "http://"+ln.Addr().String()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		match map[string]string
		want  float64
	}{
		{"corral_machines", nil, 3},
		{"corral_machines", map[string]string{"role": "web"}, 2},
		{"corral_units", nil, 6},
		{"corral_units", map[string]string{"state": "launched"}, 2},
		{"corral_units", map[string]string{"state": "loaded", "active": "failed"}, 1},
		{"corral_units", map[string]string{"state": "unscheduled"}, 1},
		{"corral_etcd_healthy", nil, 1},
		{"corral_etcd_members", nil, 1},
		{"corral_etcd_voters", nil, 1},
		{"corral_overlay_leases", nil, 3},
		{"corral_overlay_peers", nil, 2},
		{Failovers, nil, 2},
	} {
		if got := Gauge(fams, c.name, c.match); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.match, got, c.want)
		}
	}
	var h Histogram
	h.AddHistogram(fams, SchedulingLatency)
	if h.Count != 3 {
		t.Fatalf("%s count %d, want 3", SchedulingLatency, h.Count)
	}
	// Two of three samples are at most 4ms: the median is in (2ms, 4ms];
	// the 99th percentile in the bucket holding 900ms, (512ms, 1024ms].
	if p50 := h.Quantile(0.5); p50 <= 0.002 || p50 > 0.004 {
		t.Errorf("p50 %v, want within (0.002, 0.004]", p50)
	}
	if p99 := h.Quantile(0.99); p99 <= 0.512 || p99 > 1.024 {
		t.Errorf("p99 %v, want within (0.512, 1.024]", p99)
	}
	if q := (&Histogram{}).Quantile(0.5); !math.IsNaN(q) {
		t.Errorf("empty histogram's quantile %v, want NaN", q)
	}

	// The overlay down: no peers.
	overlay = false
	fams, err = Scrape(context.Background(), http.DefaultClient, "http://"+ln.Addr().String()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if got := Gauge(fams, "corral_overlay_peers", nil); got != 0 {
		t.Errorf("overlay peers with the overlay down: %v, want 0", got)
	}
}

func TestAddr(t *testing.T) {
	ip := net.IPv4(10, 0, 0, 7)
	for in, want := range map[string]string{":9479": "10.0.0.7:9479", "0.0.0.0:9100": "0.0.0.0:9100"} {
		if got, err := Addr(in, ip); err != nil || got != want {
			t.Errorf("Addr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"9479", ":http-alt", "host:99999"} {
		if _, err := Addr(bad, ip); err == nil {
			t.Errorf("Addr(%q) accepted", bad)
		}
	}
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }
