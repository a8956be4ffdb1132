package membership_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/membership"
	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/internal/clustertest"
	"github.com/corral-dev/corral/provision/state"
)

var hellos = []string{"hello@1.service", "hello@2.service", "hello@3.service"}

// exampleUnits are the repository's example unit files.
func exampleUnits(names ...string) []string {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "examples", "units")
	var out []string
	for _, n := range names {
		out = append(out, filepath.Join(dir, n))
	}
	return out
}

// activeHellos maps each hello to the machines reporting it active.
func activeHellos(s *unitstore.Snapshot) map[string][]string {
	out := map[string][]string{}
	for _, name := range hellos {
		if u := s.Units[name]; u != nil {
			for _, st := range u.States {
				if st.Active == "active" {
					out[name] = append(out[name], st.Machine)
				}
			}
		}
	}
	return out
}

// voters lists the etcd members' addresses: started voters, and learners.
func etcdMembers(t *testing.T, c *clustertest.Cluster) (voters, learners []string) {
	t.Helper()
	list, err := c.Admin.MemberList(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list.Members {
		switch {
		case m.IsLearner:
			learners = append(learners, membership.PeerIP(m))
		case m.Name == "":
			learners = append(learners, "unstarted "+membership.PeerIP(m))
		default:
			voters = append(voters, membership.PeerIP(m))
		}
	}
	slices.Sort(voters)
	return voters, learners
}

func machineNamed(t *testing.T, ms []registry.Machine, name string) registry.Machine {
	t.Helper()
	for _, m := range ms {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("no machine %s among %v", name, clustertest.MachineNames(ms))
	return registry.Machine{}
}

// The acceptance test of scale-in: four machines, three of them etcd
// voters; a voter dies for good and is removed with clusterctl; the client
// is promoted, the cluster keeps three voters, no unit is lost, the dead
// machine's subnet goes back, and the next `provision up` at the lowered
// capacity forgets the dead node and keeps the promoted one a member.
func TestDeadVoterRemovedClientPromoted(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 4, EtcdMembers: 3, Network: `cidr = "10.231.0.0/16"  backend = "vxlan"`})
	ms := c.WaitMachines(time.Minute, "four machines", func(ms []registry.Machine) bool { return len(ms) == 4 })
	client := c.Node("core-4")
	if client.Role != state.Client {
		t.Fatalf("core-4 is a %s, want a client (etcd_members = 3)", client.Role)
	}
	if out, errOut, code := c.Ctl(append([]string{"start"}, exampleUnits(hellos...)...)...); code != 0 {
		t.Fatalf("start (exit %d):\n%s%s", code, out, errOut)
	}
	c.WaitUnits("three hellos active", func(s *unitstore.Snapshot) bool {
		a := activeHellos(s)
		return len(a) == 3 && len(a[hellos[0]]) == 1 && len(a[hellos[1]]) == 1 && len(a[hellos[2]]) == 1
	})

	victim := machineNamed(t, ms, "core-2")
	short := victim.ID[:8] + "..."
	// Alive: refused without --force, and nothing is touched.
	if out, errOut, code := c.Ctl("machine", "remove", short); code == 0 || !strings.Contains(errOut, "is alive") || !strings.Contains(errOut, "--force") {
		t.Fatalf("machine remove of a live machine: exit %d\n%s%s", code, out, errOut)
	}
	if v, _ := etcdMembers(t, c); len(v) != 3 {
		t.Fatalf("voters after a refused removal: %v", v)
	}
	leases, _, err := subnet.List(t.Context(), c.Admin)
	if err != nil || !slices.ContainsFunc(leases, func(l subnet.Lease) bool { return l.MachineID == victim.ID }) {
		t.Fatalf("core-2 holds no subnet lease before its removal: %v %v", leases, err)
	}

	c.Kill("core-2")
	killed := time.Now()
	c.WaitMachines(time.Minute, "core-2's lease to expire", func(ms []registry.Machine) bool {
		return !slices.ContainsFunc(ms, func(m registry.Machine) bool { return m.ID == victim.ID })
	})
	start := time.Now()
	out, errOut, code := c.Ctl("machine", "remove", short)
	t.Logf("machine remove of a dead voter, client promoted: %.1fs", time.Since(start).Seconds())
	if code != 0 {
		t.Fatalf("machine remove %s: exit %d\n%s%s", short, code, out, errOut)
	}
	t.Logf("machine remove:\n%s", out)
	for _, want := range []string{"Removing machine " + short + " (core-2", "removed etcd member", "2 voters left",
		"promoted core-4 to etcd voter; 3 voters", "released overlay subnet", "Removed machine " + short} {
		if !strings.Contains(out, want) {
			t.Errorf("machine remove output lacks %q", want)
		}
	}
	voters, learners := etcdMembers(t, c)
	want := []string{c.Node("core-1").IP.String(), c.Node("core-3").IP.String(), client.IP.String()}
	slices.Sort(want)
	if !slices.Equal(voters, want) || len(learners) != 0 {
		t.Fatalf("etcd members: voters %v, learners %v; want voters %v and no learners", voters, learners, want)
	}
	leases, _, _ = subnet.List(t.Context(), c.Admin)
	if slices.ContainsFunc(leases, func(l subnet.Lease) bool { return l.MachineID == victim.ID }) {
		t.Errorf("core-2's subnet lease is still held: %v", leases)
	}
	s := c.WaitUnits("three hellos active on live machines", func(s *unitstore.Snapshot) bool {
		a := activeHellos(s)
		for _, name := range hellos {
			if len(a[name]) != 1 || a[name][0] == victim.ID {
				return false
			}
		}
		return true
	})
	t.Logf("units active again %.1fs after the kill", time.Since(killed).Seconds())
	if a := activeHellos(s); a[hellos[0]][0] == a[hellos[1]][0] || a[hellos[1]][0] == a[hellos[2]][0] || a[hellos[0]][0] == a[hellos[2]][0] {
		t.Errorf("hellos conflict with each other but share a machine: %v", a)
	}
	// The promoted machine says so in the registry.
	c.WaitMachines(time.Minute, "core-4 registered as a member", func(ms []registry.Machine) bool {
		return slices.ContainsFunc(ms, func(m registry.Machine) bool { return m.Name == "core-4" && m.Member })
	})

	// The file catches up: three nodes. The dead node is forgotten (not
	// started again), nothing else is removed, and core-4 is a member now.
	c.Scale(3)
	var names []string
	for _, n := range c.Nodes() {
		names = append(names, n.Name)
	}
	if fmt.Sprint(names) != "[core-1 core-3 core-4]" {
		t.Fatalf("nodes after scaling to 3: %v", names)
	}
	if r := c.Node("core-4").Role; r != state.Member {
		t.Errorf("core-4 is a %s in the state, want member", r)
	}
	if v, l := etcdMembers(t, c); !slices.Equal(v, want) || len(l) != 0 {
		t.Fatalf("after provision up: voters %v, learners %v; want %v", v, l, want)
	}
	// A new node joins as a client, through members that include the
	// promoted one.
	c.Scale(4)
	c.WaitMachines(time.Minute, "four machines", func(ms []registry.Machine) bool { return len(ms) == 4 })
	if v, l := etcdMembers(t, c); !slices.Equal(v, want) || len(l) != 0 {
		t.Fatalf("after scaling out again: voters %v, learners %v; want %v", v, l, want)
	}
}

// A removal that would leave fewer voters than a quorum of the current
// ones is refused, with the numbers and what to do, before anything goes.
func TestQuorumRefusal(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, EtcdMembers: 3})
	if out, errOut, code := c.Ctl("machine", "remove", "core-3"); code == 0 || !strings.Contains(errOut, "is alive") {
		t.Fatalf("machine remove of a live machine: exit %d\n%s%s", code, out, errOut)
	}
	c.Edit("desired_capacity = 3", "desired_capacity = 1")
	err := c.TryUp()
	if err == nil {
		t.Fatal("scaling 3 voters to 1 was allowed")
	}
	for _, want := range []string{"refusing to remove core-3, core-2", "3 etcd voters, 3 of them healthy",
		"would leave 1", "quorum (2)", "raise desired_capacity", "nothing was removed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q lacks %q", err, want)
		}
	}
	if v, l := etcdMembers(t, c); len(v) != 3 || len(l) != 0 {
		t.Fatalf("after the refusal: voters %v, learners %v; want 3 voters", v, l)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if ms, _, err := registry.List(ctx, c.Admin); err != nil || len(ms) != 3 {
		t.Fatalf("machines after the refusal: %v %v", clustertest.MachineNames(ms), err)
	}

	// Forced, a live voter goes: its clusterd stops, and with no client
	// to promote the cluster is told it runs short.
	out, errOut, code := c.Ctl("machine", "remove", "--force", "core-3")
	if code != 0 || !strings.Contains(out, "removed etcd member") || !strings.Contains(out, "no client machine to promote: the cluster runs with 2 etcd voters of the 3 configured") {
		t.Fatalf("machine remove --force core-3: exit %d\n%s%s", code, out, errOut)
	}
	c.WaitMachines(time.Minute, "core-3 gone", func(ms []registry.Machine) bool {
		return len(ms) == 2 && !slices.Contains(clustertest.MachineNames(ms), "core-3")
	})
	logFile := filepath.Join(c.Dir().NodeDir("core-3"), "clusterd.log")
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(logFile)
		if strings.Contains(string(b), "was removed from the cluster") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("core-3's clusterd did not stop on its removal; its log:\n%s", b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Two voters left: removing one more would leave less than a quorum.
	if out, errOut, code := c.Ctl("machine", "remove", "--force", "core-2"); code == 0 || !strings.Contains(errOut, "2 etcd voters, 2 of them healthy") {
		t.Fatalf("machine remove of one of two voters: exit %d\n%s%s", code, out, errOut)
	}
	if v, _ := etcdMembers(t, c); len(v) != 2 {
		t.Fatalf("voters: %v, want 2", v)
	}
}

// waitVoters polls the member list (etcd has no watch on it) until it has
// n started voters and no learner.
func waitVoters(t *testing.T, c *clustertest.Cluster, n int) []string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		v, l := etcdMembers(t, c)
		if len(v) == n && len(l) == 0 {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %d voters: voters %v, learners %v", n, v, l)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Raising etcd_members promotes clients without restarting anything, and
// scaling in a voter through provision promotes a client in its place
// before the node is terminated; the state follows both.
func TestScaleInVoterPromotesClient(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, EtcdMembers: 1})
	if v, _ := etcdMembers(t, c); len(v) != 1 {
		t.Fatalf("voters at the start: %v, want 1", v)
	}
	c.Edit("etcd_members = 1", "etcd_members = 3")
	c.Scale(4) // core-4 joins as a voter; one client is promoted
	if r := c.Node("core-4").Role; r != state.Member {
		t.Fatalf("core-4 is a %s, want a member", r)
	}
	waitVoters(t, c, 3)

	c.Scale(3) // core-4, a voter, goes; the other client takes its place
	if slices.ContainsFunc(c.Nodes(), func(n state.Node) bool { return n.Name == "core-4" }) {
		t.Fatal("core-4 still in the state")
	}
	voters := waitVoters(t, c, 3)
	var want []string
	for _, n := range c.Nodes() {
		want = append(want, n.IP.String())
		if n.Role != state.Member {
			t.Errorf("%s is a %s in the state, want member", n.Name, n.Role)
		}
	}
	slices.Sort(want)
	if !slices.Equal(voters, want) {
		t.Fatalf("voters %v, want core-1..3 %v", voters, want)
	}
	c.WaitMachines(time.Minute, "three machines, all members", func(ms []registry.Machine) bool {
		return len(ms) == 3 && !slices.ContainsFunc(ms, func(m registry.Machine) bool { return !m.Member })
	})
}
