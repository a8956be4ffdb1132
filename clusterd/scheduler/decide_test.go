package scheduler

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/unit"
	"github.com/corral-dev/corral/clusterd/unitstore"
)

const hello = `[Unit]
Description=hello %i
[Service]
ExecStart=/bin/sleep 1000
[X-Fleet]
Conflicts=hello@*
`

const sidekick = `[Unit]
BindsTo=hello@%i.service
[Service]
ExecStart=/bin/sleep 1000
[X-Fleet]
MachineOf=hello@%i.service
`

const global = `[Service]
ExecStart=/bin/sleep 1000
[X-Fleet]
Global=true
MachineMetadata=role=database
`

func machines(n int, md map[int]string) []registry.Machine {
	var out []registry.Machine
	for i := 1; i <= n; i++ {
		m := registry.Machine{ID: fmt.Sprintf("%032x", i), Name: fmt.Sprintf("core-%d", i)}
		if role, ok := md[i]; ok {
			m.Metadata = map[string]string{"role": role}
		}
		out = append(out, m)
	}
	return out
}

// snapshot submits instances of templates, all launched.
func snapshot(t testing.TB, units map[string]string) *unitstore.Snapshot {
	t.Helper()
	s := &unitstore.Snapshot{Units: map[string]*unitstore.Unit{}, Assigned: map[string]map[string]unitstore.Assignment{}}
	for name, src := range units {
		n, err := unit.ParseName(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := unit.Parse(name, []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		_ = n // stored as submitted: the template's text under the instance's name
		s.Units[name] = &unitstore.Unit{
			File:    unitstore.UnitFile{Name: name, Hash: f.Hash(), Content: string(f.Bytes())},
			Desired: unitstore.Launched,
		}
	}
	return s
}

func placed(p *plan) map[string]string {
	out := map[string]string{}
	for m, units := range p.assign {
		for name := range units {
			out[name] = m
		}
	}
	return out
}

func TestConflictsSpreadAndSidekicksFollow(t *testing.T) {
	s := snapshot(t, map[string]string{
		"hello@1.service": hello, "hello@2.service": hello, "hello@3.service": hello,
		"hello-sidekick@1.service": sidekick, "hello-sidekick@2.service": sidekick, "hello-sidekick@3.service": sidekick,
	})
	p := decide(s, machines(3, nil), nil)
	at := placed(p)
	seen := map[string]string{}
	for i := 1; i <= 3; i++ {
		h := fmt.Sprintf("hello@%d.service", i)
		m, ok := at[h]
		if !ok {
			t.Fatalf("%s not placed: %+v", h, p.placement[h])
		}
		if other, dup := seen[m]; dup {
			t.Fatalf("%s and %s share machine %s despite Conflicts", h, other, m)
		}
		seen[m] = h
		if sk := at[fmt.Sprintf("hello-sidekick@%d.service", i)]; sk != m {
			t.Fatalf("sidekick %d on %s, its target on %s", i, sk, m)
		}
	}
}

func TestNoRoomIsReportedWithTheReason(t *testing.T) {
	s := snapshot(t, map[string]string{
		"hello@1.service": hello, "hello@2.service": hello, "hello@3.service": hello, "hello@4.service": hello,
	})
	p := decide(s, machines(3, nil), nil)
	if len(placed(p)) != 3 {
		t.Fatalf("placed %v", placed(p))
	}
	var unplaced []string
	for name, pl := range p.placement {
		if pl.Machine == "" {
			unplaced = append(unplaced, name)
			if !strings.Contains(pl.Reason, "Conflicts=hello@*") || !strings.Contains(pl.Reason, "3 of 3 machines") {
				t.Fatalf("reason for %s: %q", name, pl.Reason)
			}
		}
	}
	if len(unplaced) != 1 {
		t.Fatalf("unplaced = %v", unplaced)
	}
}

func TestGlobalFollowsMetadata(t *testing.T) {
	s := snapshot(t, map[string]string{"db-monitor.service": global})
	p := decide(s, machines(4, map[int]string{2: "database", 4: "database", 3: "web"}), nil)
	at := p.assign
	for i, want := range map[int]bool{1: false, 2: true, 3: false, 4: true} {
		_, got := at[fmt.Sprintf("%032x", i)]["db-monitor.service"]
		if got != want {
			t.Errorf("machine %d runs the global unit: %v, want %v", i, got, want)
		}
	}
}

// A unit stays on a machine that is gone but within its grace period, and
// moves once the machine is declared dead.
func TestLostMachineKeepsUnitsUntilDead(t *testing.T) {
	s := snapshot(t, map[string]string{"hello@1.service": hello})
	gone := fmt.Sprintf("%032x", 9)
	s.Assigned[gone] = map[string]unitstore.Assignment{"hello@1.service": {Name: "hello@1.service"}}
	ms := machines(2, nil)
	if at := placed(decide(s, ms, nil)); at["hello@1.service"] != gone {
		t.Fatalf("within grace the unit moved to %s", at["hello@1.service"])
	}
	at := placed(decide(s, ms, map[string]bool{gone: true}))
	if m := at["hello@1.service"]; m == gone || m == "" {
		t.Fatalf("after grace the unit is on %q", m)
	}
}

func TestInactiveUnitsAreNotPlaced(t *testing.T) {
	s := snapshot(t, map[string]string{"hello@1.service": hello})
	s.Units["hello@1.service"].Desired = unitstore.Inactive
	if at := placed(decide(s, machines(1, nil), nil)); len(at) != 0 {
		t.Fatalf("an inactive unit was placed: %v", at)
	}
}

// A unit that must move never takes the machine of one that stays.
func TestMovingUnitDoesNotDisplaceAnother(t *testing.T) {
	s := snapshot(t, map[string]string{"hello@1.service": hello, "hello@2.service": hello, "hello@3.service": hello})
	ms := machines(2, nil)
	gone := fmt.Sprintf("%032x", 9)
	s.Assigned[ms[0].ID] = map[string]unitstore.Assignment{"hello@1.service": {Name: "hello@1.service"}}
	s.Assigned[gone] = map[string]unitstore.Assignment{"hello@2.service": {Name: "hello@2.service"}}
	s.Assigned[ms[1].ID] = map[string]unitstore.Assignment{"hello@3.service": {Name: "hello@3.service"}}
	p := decide(s, ms, map[string]bool{gone: true})
	at := placed(p)
	if at["hello@1.service"] != ms[0].ID || at["hello@3.service"] != ms[1].ID {
		t.Fatalf("settled units were moved: %v", at)
	}
	if pl := p.placement["hello@2.service"]; pl.Machine != "" || !strings.Contains(pl.Reason, "Conflicts") {
		t.Fatalf("hello@2 placement = %+v", pl)
	}
}

// replacing is a plain unit that replaces the named units.
func replacing(extra string, names ...string) string {
	return "[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nReplaces=" + strings.Join(names, " ") + "\n" + extra
}

const plain = "[Service]\nExecStart=/bin/sleep 1000\n"

// Replaces, as fleet had it: a unit with no home that replaces one takes
// that unit's machine, the replaced unit moves to the least-loaded machine
// left, and the two never share a machine.
func TestReplaces(t *testing.T) {
	ms := machines(3, map[int]string{3: "web"})
	m1, m2, m3 := ms[0].ID, ms[1].ID, ms[2].ID
	cases := []struct {
		name     string
		machines int               // the first n of ms
		units    map[string]string // name → file
		at       map[string]string // unit → the machine it is on now
		want     map[string]string // unit → where it must be; "" for unscheduled
		reason   map[string]string // unit → what its unscheduled reason must say
	}{{
		name:     "takes the replaced unit's machine, which moves to the least loaded",
		machines: 3,
		units:    map[string]string{"new.service": replacing("", "old.service"), "old.service": plain, "x.service": plain},
		at:       map[string]string{"old.service": m2, "x.service": m1},
		want:     map[string]string{"new.service": m2, "old.service": m3, "x.service": m1},
	}, {
		name:     "the replaced unit, with nowhere else to go, is unscheduled and says why",
		machines: 1,
		units:    map[string]string{"new.service": replacing("", "old.service"), "old.service": plain},
		at:       map[string]string{"old.service": m1},
		want:     map[string]string{"new.service": m1, "old.service": ""},
		reason:   map[string]string{"old.service": "no machine fits: Replaces=old.service (of new.service) (1 of 1 machines)"},
	}, {
		name:     "a unit that has a home keeps it, and so does the unit it replaces",
		machines: 2,
		units:    map[string]string{"new.service": replacing("", "old.service"), "old.service": plain},
		at:       map[string]string{"new.service": m1, "old.service": m2},
		want:     map[string]string{"new.service": m1, "old.service": m2},
	}, {
		name:     "neither is placed yet: they never share a machine",
		machines: 1,
		units:    map[string]string{"new.service": replacing("", "old.service"), "old.service": plain},
		want:     map[string]string{"new.service": m1, "old.service": ""},
		reason:   map[string]string{"old.service": "Replaces=old.service (of new.service)"},
	}, {
		name:     "nor does the replacing unit go where the replaced one already is",
		machines: 1,
		units:    map[string]string{"z-new.service": replacing("", "a-old.service"), "a-old.service": plain},
		want:     map[string]string{"a-old.service": m1, "z-new.service": ""},
		reason:   map[string]string{"z-new.service": "no machine fits: Replaces=a-old.service (1 of 1 machines)"},
	}, {
		name:     "a unit on a machine gone for less than the grace period is not displaced",
		machines: 2,
		units:    map[string]string{"new.service": replacing("", "old.service"), "old.service": plain},
		at:       map[string]string{"old.service": fmt.Sprintf("%032x", 9)},
		want:     map[string]string{"new.service": m1, "old.service": fmt.Sprintf("%032x", 9)},
	}, {
		name:     "an instance of a template replaces the instance its %i names",
		machines: 3,
		units: map[string]string{
			"new@1.service": replacing("", "old@%i.service"),
			"old@1.service": plain, "old@2.service": plain,
		},
		at:   map[string]string{"old@1.service": m1, "old@2.service": m2},
		want: map[string]string{"new@1.service": m1, "old@1.service": m3, "old@2.service": m2},
	}, {
		name:     "a machine that does not suit the replacing unit is not taken",
		machines: 3,
		units:    map[string]string{"new.service": replacing("MachineMetadata=role=web\n", "old.service"), "old.service": plain},
		at:       map[string]string{"old.service": m1},
		want:     map[string]string{"new.service": m3, "old.service": m1},
	}, {
		name:     "nor is one where a unit that stays conflicts with it",
		machines: 2,
		units: map[string]string{
			"new.service": replacing("", "old.service"), "old.service": plain,
			"guard.service": plain + "[X-Fleet]\nConflicts=new*\n",
		},
		at:   map[string]string{"old.service": m1, "guard.service": m1},
		want: map[string]string{"new.service": m2, "old.service": m1, "guard.service": m1},
	}, {
		name:     "the replaced unit's sidekick follows it to its new machine",
		machines: 2,
		units: map[string]string{
			"new.service": replacing("", "old.service"), "old.service": plain,
			"old-sidekick.service": plain + "[X-Fleet]\nMachineOf=old.service\n",
		},
		at:   map[string]string{"old.service": m1, "old-sidekick.service": m1},
		want: map[string]string{"new.service": m1, "old.service": m2, "old-sidekick.service": m2},
	}, {
		name:     "a glob is no unit name: the unit is refused as invalid",
		machines: 1,
		units:    map[string]string{"new@1.service": replacing("", "old@*"), "old@1.service": plain},
		at:       map[string]string{"old@1.service": m1},
		want:     map[string]string{"new@1.service": "", "old@1.service": m1},
		reason:   map[string]string{"new@1.service": `invalid unit: line 5: Replaces: invalid unit name "old@*"`},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := snapshot(t, tc.units)
			for name, m := range tc.at {
				if s.Assigned[m] == nil {
					s.Assigned[m] = map[string]unitstore.Assignment{}
				}
				s.Assigned[m][name] = unitstore.Assignment{Name: name, Hash: s.Units[name].File.Hash}
			}
			p := decide(s, ms[:tc.machines], nil)
			at := placed(p)
			for name, want := range tc.want {
				if at[name] != want {
					t.Errorf("%s on %q, want %q (placement %+v)", name, at[name], want, p.placement[name])
				}
				if want == "" && p.placement[name].Machine != "" {
					t.Errorf("%s unplaced but its placement says %+v", name, p.placement[name])
				}
			}
			for name, why := range tc.reason {
				if got := p.placement[name].Reason; !strings.Contains(got, why) {
					t.Errorf("%s: reason %q, want it to say %q", name, got, why)
				}
			}
			// Never together, whatever else happened.
			for name, u := range tc.units {
				if !strings.Contains(u, "Replaces=") || at[name] == "" {
					continue
				}
				for _, other := range placedBeside(at, name) {
					if strings.Contains(u, "Replaces="+strings.TrimSuffix(other, ".service")) {
						t.Errorf("%s shares %s with %s, which it replaces", name, at[name], other)
					}
				}
			}
		})
	}
}

// placedBeside lists the units on the same machine as name.
func placedBeside(at map[string]string, name string) []string {
	var out []string
	for other, m := range at {
		if other != name && m == at[name] {
			out = append(out, other)
		}
	}
	return out
}

// The load index that picks the least-loaded machine agrees with the
// assignments, whatever mix of units, lost machines and global units the
// plan was made from: every live machine sits, once, in the bucket of its
// load, and each bucket is in id order.
func TestLoadIndexMatchesAssignments(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	kinds := []string{hello, sidekick, global, plain, plain + "[X-Fleet]\nMachineMetadata=role=web\n"}
	for round := range 50 {
		nm := 1 + rng.IntN(8)
		ms := machines(nm, map[int]string{1: "web", 2: "database", 4: "database"})
		units := map[string]string{}
		for i := range 1 + rng.IntN(30) {
			k := rng.IntN(len(kinds))
			units[fmt.Sprintf("%s@%d.service", []string{"hello", "hello-sidekick", "db-monitor", "plain", "web"}[k], i%5)] = kinds[k]
		}
		s := snapshot(t, units)
		gone := fmt.Sprintf("%032x", 99)
		for name := range units {
			if rng.IntN(3) == 0 {
				m := gone
				if rng.IntN(2) == 0 {
					m = ms[rng.IntN(nm)].ID
				}
				if s.Assigned[m] == nil {
					s.Assigned[m] = map[string]unitstore.Assignment{}
				}
				s.Assigned[m][name] = unitstore.Assignment{Name: name}
			}
		}
		p := decide(s, ms, nil)
		seen := map[string]bool{}
		for load, ids := range p.byLoad {
			if !slices.IsSorted(ids) {
				t.Fatalf("round %d: bucket %d out of order: %v", round, load, ids)
			}
			for _, id := range ids {
				if seen[id] || len(p.assign[id]) != load {
					t.Fatalf("round %d: %s in bucket %d (seen before: %v), has %d units", round, id, load, seen[id], len(p.assign[id]))
				}
				seen[id] = true
			}
		}
		if len(seen) != nm || seen[gone] {
			t.Fatalf("round %d: index holds %d machines of %d (the lost one: %v)", round, len(seen), nm, seen[gone])
		}
	}
}
