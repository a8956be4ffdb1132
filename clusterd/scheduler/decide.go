package scheduler

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/unit"
	"github.com/corral-dev/corral/clusterd/unitstore"
)

// plan is the complete desired picture: every assignment and placement.
type plan struct {
	assign    map[string]map[string]unitstore.Assignment // machine → unit → assignment
	placement map[string]unitstore.Placement
}

func (p *plan) put(machine string, a unitstore.Assignment) {
	if p.assign[machine] == nil {
		p.assign[machine] = map[string]unitstore.Assignment{}
	}
	p.assign[machine][a.Name] = a
}

// machineOf returns where a unit is placed in the plan so far.
func (p *plan) machineOf(name string) string {
	for m, units := range p.assign {
		if _, ok := units[name]; ok {
			return m
		}
	}
	return ""
}

// candidate is a unit that wants a place.
type candidate struct {
	name    string
	file    unitstore.UnitFile
	desired string
	fleet   unit.Fleet
	current string // the machine it is on now, if that machine is not dead
}

// decide places every unit. It is a pure function of its inputs, so the
// scheduling rules are tested without a cluster.
//
// Units stay where they are while that machine is alive (or gone for less
// than the grace period: not in dead) and still satisfies them. Others go to
// the least-loaded machine that satisfies every constraint; Global units go
// to every machine that matches. Units that follow another (MachineOf) are
// placed after it.
func decide(snap *unitstore.Snapshot, machines []registry.Machine, dead map[string]bool) *plan {
	p := &plan{assign: map[string]map[string]unitstore.Assignment{}, placement: map[string]unitstore.Placement{}}
	byID := map[string]registry.Machine{}
	for _, m := range machines {
		byID[m.ID] = m
	}
	current := map[string]string{} // unit → machine it is assigned to (not dead)
	for m, units := range snap.Assigned {
		if dead[m] {
			continue
		}
		for name := range units {
			current[name] = m
		}
	}
	var cands []candidate
	for _, name := range slices.Sorted(maps.Keys(snap.Units)) {
		u := snap.Units[name]
		if u.File.Content == "" || (u.Desired != unitstore.Loaded && u.Desired != unitstore.Launched) {
			continue
		}
		fl, err := fleetOf(name, u.File.Content)
		if err != nil {
			p.placement[name] = unitstore.Placement{Reason: "invalid unit: " + err.Error()}
			continue
		}
		cands = append(cands, candidate{name: name, file: u.File, desired: u.Desired, fleet: fl, current: current[name]})
	}
	assignment := func(c candidate) unitstore.Assignment {
		return unitstore.Assignment{Name: c.name, Hash: c.file.Hash, Content: c.file.Content, Desired: c.desired}
	}
	// First every unit that can stay where it is stays (its machine alive,
	// or gone for less than the grace period), so a unit looking for a new
	// home never displaces one that has a home. Targets before followers.
	slices.SortStableFunc(cands, func(a, b candidate) int {
		return cmp.Compare(len(a.fleet.MachineOf), len(b.fleet.MachineOf))
	})
	var homeless []candidate
	for _, c := range cands {
		if c.current == "" || c.fleet.Global {
			homeless = append(homeless, c)
			continue
		}
		if m, alive := byID[c.current]; alive && fits(p, c, m) != "" {
			homeless = append(homeless, c)
			continue
		}
		p.put(c.current, assignment(c))
		p.placement[c.name] = unitstore.Placement{Machine: c.current}
	}
	// Then the rest: Global units everywhere they fit, then the others on
	// the least-loaded machine that fits, followers after their targets.
	slices.SortStableFunc(homeless, func(a, b candidate) int {
		if a.fleet.Global != b.fleet.Global {
			if a.fleet.Global {
				return -1
			}
			return 1
		}
		return cmp.Compare(len(a.fleet.MachineOf), len(b.fleet.MachineOf))
	})
	ids := slices.Sorted(maps.Keys(byID))
	for _, c := range homeless {
		if c.fleet.Global {
			n := 0
			for _, id := range ids {
				if why := fits(p, c, byID[id]); why == "" {
					p.put(id, assignment(c))
					n++
				}
			}
			if n == 0 {
				p.placement[c.name] = unitstore.Placement{Reason: "global unit: no machine matches " + describe(c.fleet)}
			}
			continue
		}
		best, reasons := "", map[string]int{}
		for _, id := range ids {
			if why := fits(p, c, byID[id]); why != "" {
				reasons[why]++
				continue
			}
			if best == "" || load(p, id) < load(p, best) {
				best = id
			}
		}
		if best == "" {
			p.placement[c.name] = unitstore.Placement{Reason: unschedulable(reasons, len(ids))}
			continue
		}
		p.put(best, assignment(c))
		p.placement[c.name] = unitstore.Placement{Machine: best}
	}
	return p
}

func load(p *plan, machine string) int { return len(p.assign[machine]) }

// fits returns "" if the unit may run on m, else the constraint that fails.
func fits(p *plan, c candidate, m registry.Machine) string {
	f := c.fleet
	if f.MachineID != "" && !strings.HasPrefix(m.ID, f.MachineID) {
		return "MachineID=" + f.MachineID
	}
	for key, values := range f.MachineMetadata {
		if !slices.Contains(values, m.Metadata[key]) {
			return "MachineMetadata " + key + "=" + strings.Join(values, "|")
		}
	}
	for _, target := range f.MachineOf {
		if p.machineOf(target) != m.ID {
			return "MachineOf=" + target
		}
	}
	for other, a := range p.assign[m.ID] {
		if other == c.name {
			continue
		}
		for _, glob := range f.Conflicts {
			if unit.Match(glob, other) {
				return "Conflicts=" + glob
			}
		}
		// Conflicts work both ways, as in fleet.
		if of, err := otherFleet(a); err == nil {
			for _, glob := range of.Conflicts {
				if unit.Match(glob, c.name) {
					return "Conflicts=" + glob + " (of " + other + ")"
				}
			}
		}
	}
	return ""
}

func otherFleet(a unitstore.Assignment) (unit.Fleet, error) { return fleetOf(a.Name, a.Content) }

// fleetOf reads a unit's [X-Fleet] section with the instance's specifiers
// (%i, %p, %n …) expanded: an instance is stored with its template's text.
func fleetOf(name, content string) (unit.Fleet, error) {
	n, err := unit.ParseName(name)
	if err != nil {
		return unit.Fleet{}, err
	}
	f, err := unit.Parse(name, []byte(content))
	if err != nil {
		return unit.Fleet{}, err
	}
	return unit.Instantiate(f, n, unit.Machine{}).Fleet()
}

func describe(f unit.Fleet) string {
	var parts []string
	for k, v := range f.MachineMetadata {
		parts = append(parts, "MachineMetadata "+k+"="+strings.Join(v, "|"))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// unschedulable says why a unit fits nowhere: each failing constraint with
// the number of machines it ruled out.
func unschedulable(reasons map[string]int, machines int) string {
	if machines == 0 {
		return "no machines"
	}
	var parts []string
	for _, why := range slices.Sorted(maps.Keys(reasons)) {
		parts = append(parts, fmt.Sprintf("%s (%d of %d machines)", why, reasons[why], machines))
	}
	return "no machine fits: " + strings.Join(parts, "; ")
}
