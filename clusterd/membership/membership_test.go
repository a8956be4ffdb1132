package membership_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/membership"
	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func voters(healthy ...bool) []membership.Member {
	var out []membership.Member
	for i, h := range healthy {
		n := string(rune('1' + i))
		out = append(out, membership.Member{ID: uint64(i + 1), Name: "core-" + n, IP: "10.0.0." + n, Healthy: h})
	}
	return out
}

func machine(n string) membership.Machine {
	return membership.Machine{ID: strings.Repeat(n, 32), Name: "core-" + n, IP: "10.0.0." + n}
}

func TestCheckRemoval(t *testing.T) {
	client := []registry.Machine{{ID: strings.Repeat("4", 32), Name: "core-4", IP: "10.0.0.4"}}
	for _, tc := range []struct {
		name    string
		survey  membership.Survey
		remove  []membership.Machine
		refused []string // substrings of the refusal; nil: allowed
	}{
		{"one of three voters", membership.Survey{Voters: voters(true, true, true), Desired: 3},
			[]membership.Machine{machine("3")}, nil},
		{"two of three voters, no client", membership.Survey{Voters: voters(true, true, true), Desired: 3},
			[]membership.Machine{machine("3"), machine("2")},
			[]string{"3 etcd voters, 3 of them healthy", "would leave 1", "quorum (2) of the 3 voters now", "add machines first"}},
		{"two of three voters, a client promoted in between", membership.Survey{Voters: voters(true, true, true), Clients: client, Desired: 3},
			[]membership.Machine{machine("3"), machine("2")}, nil},
		{"two of three voters and the client too", membership.Survey{Voters: voters(true, true, true), Clients: client, Desired: 3},
			[]membership.Machine{machine("4"), machine("3"), machine("2")}, []string{"would leave 1"}},
		{"a dead voter", membership.Survey{Voters: voters(true, false, true), Desired: 3},
			[]membership.Machine{machine("2")}, nil},
		{"a healthy voter while another is dead", membership.Survey{Voters: voters(true, false, true), Desired: 3},
			[]membership.Machine{machine("3")}, []string{"3 etcd voters, 2 of them healthy", "only 1 healthy", "remove them first"}},
		{"the only voter", membership.Survey{Voters: voters(true), Desired: 1},
			[]membership.Machine{machine("1")}, []string{"1 etcd voters", "would leave 0"}},
		{"a client", membership.Survey{Voters: voters(true), Clients: client, Desired: 1},
			[]membership.Machine{machine("4")}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.survey.CheckRemoval(tc.remove)
			if tc.refused == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("allowed, want a refusal")
			}
			for _, want := range tc.refused {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("refusal %q lacks %q", err, want)
				}
			}
		})
	}
}

func TestFind(t *testing.T) {
	c := etcdtest.Start(t)
	ctx := t.Context()
	a := membership.Machine{ID: "ab" + strings.Repeat("1", 30), Name: "core-1", IP: "10.0.0.1"}
	b := membership.Machine{ID: "ab" + strings.Repeat("2", 30), Name: "core-2", IP: "10.0.0.2"}
	for _, m := range []membership.Machine{a, b} {
		if err := membership.Record(ctx, c, m); err != nil {
			t.Fatal(err)
		}
	}
	for arg, want := range map[string]string{a.ID: a.ID, "ab222222...": b.ID, "ab1": a.ID, "core-2": b.ID} {
		if m, err := membership.Find(ctx, c, arg); err != nil || m.ID != want {
			t.Errorf("Find(%q) = %v, %v; want %s", arg, m.ID, err, want)
		}
	}
	if _, err := membership.Find(ctx, c, "ab"); err == nil || !strings.Contains(err.Error(), "matches 2 machines") {
		t.Errorf("Find(ab) = %v, want ambiguous", err)
	}
	if _, err := membership.Find(ctx, c, "ff"); !errors.Is(err, membership.ErrNoMachine) || !strings.Contains(err.Error(), "ab111111 (core-1)") {
		t.Errorf("Find(ff) = %v, want ErrNoMachine listing the known machines", err)
	}
}

// Removing a client machine: its subnet, registration and index entry go,
// and its tombstone stays.
func TestRemoveClient(t *testing.T) {
	c := etcdtest.Start(t)
	ctx := t.Context()
	m := machine("a")
	if err := membership.Record(ctx, c, m); err != nil {
		t.Fatal(err)
	}
	g, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, registry.Prefix+m.ID, `{"id":"`+m.ID+`","ip":"10.0.0.10"}`, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	cfg := &subnet.Config{Network: netip.MustParsePrefix("10.1.0.0/16")}
	if err := subnet.PutConfig(ctx, c, cfg); err != nil {
		t.Fatal(err)
	}
	l, err := subnet.Acquire(ctx, c, cfg, m.ID, netip.MustParseAddr("10.0.0.10"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if alive, err := membership.Alive(ctx, c, m.ID); err != nil || !alive {
		t.Fatalf("Alive = %v, %v; want true", alive, err)
	}
	var steps []string
	res, err := membership.Remove(ctx, c, m, membership.RemoveOptions{Report: func(s string) { steps = append(steps, s) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.WasVoter || res.Promoted != "" {
		t.Errorf("result %+v, want a client removed and nothing promoted", res)
	}
	joined := strings.Join(steps, "\n")
	for _, want := range []string{"released overlay subnet " + l.Subnet.String(), "removed machine aaaaaaaa's registration"} {
		if !strings.Contains(joined, want) {
			t.Errorf("steps %q lack %q", joined, want)
		}
	}
	if leases, _, _ := subnet.List(ctx, c); len(leases) != 0 {
		t.Errorf("leases after removal: %v", leases)
	}
	if alive, _ := membership.Alive(ctx, c, m.ID); alive {
		t.Error("still registered after removal")
	}
	if ttl, _ := c.TimeToLive(ctx, g.ID); ttl.TTL > 0 {
		t.Errorf("registration lease still alive (TTL %d)", ttl.TTL)
	}
	if gone, _ := membership.Removed(ctx, c, m.ID); !gone {
		t.Error("no tombstone")
	}
	if known, _ := membership.Known(ctx, c); len(known) != 0 {
		t.Errorf("still known: %v", known)
	}
}

// Two clients racing to be promoted: one wins the claim, and the other,
// once the winner made the voter count whole, never starts a promotion.
func TestPromoterOneAtATime(t *testing.T) {
	c := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := membership.PutSettings(ctx, c, membership.Settings{Voters: 2}); err != nil {
		t.Fatal(err)
	}
	var inside, calls atomic.Int32
	overlap := make(chan string, 2)
	promote := func(ctx context.Context, check func(context.Context, *clientv3.Client) error) error {
		if err := check(ctx, c); err != nil {
			return err
		}
		calls.Add(1)
		if inside.Add(1) > 1 {
			overlap <- "two promotions at once"
		}
		defer inside.Add(-1)
		// The etcd here has one member; a finished promotion is stood in for
		// by the settings now asking for as many voters as there are.
		return membership.PutSettings(ctx, c, membership.Settings{Voters: 1})
	}
	done := make(chan string, 2)
	var wg sync.WaitGroup
	for _, n := range []string{"b", "c"} {
		p := &membership.Promoter{Client: c, Machine: machine(n), Promote: promote, Recheck: 50 * time.Millisecond}
		wg.Go(func() {
			if p.Run(ctx) == nil && ctx.Err() == nil {
				done <- p.Machine.Name
			}
		})
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("no promotion within 30s")
	}
	// What must not happen is the loser promoting too: it has no event to
	// wait for, so watch it for twenty of its recheck rounds.
	select {
	case msg := <-overlap:
		t.Fatal(msg)
	case <-done:
		t.Fatal("both machines were promoted")
	case <-time.After(time.Second):
	}
	cancel()
	wg.Wait()
	select {
	case msg := <-overlap:
		t.Fatal(msg)
	default:
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d promotions, want 1", n)
	}
}
