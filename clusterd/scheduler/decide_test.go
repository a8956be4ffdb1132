package scheduler

import (
	"fmt"
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
func snapshot(t *testing.T, units map[string]string) *unitstore.Snapshot {
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
