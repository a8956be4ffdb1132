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

	// What decide needs to answer fits quickly; not part of the result.
	// on lists the units put on each machine, in the order they were put;
	// binding, the ones among them whose own rules keep others away
	// (Conflicts, Replaces): the only ones a newcomer's name is checked
	// against.
	on      map[string][]*candidate
	binding map[string][]*candidate
	// byLoad orders the live machines by load, then id: byLoad[n] holds,
	// sorted, those that have n units, so the least-loaded machine that
	// fits is the first that fits in this order.
	byLoad [][]string
	live   map[string]bool
}

func newPlan() *plan {
	return &plan{
		assign: map[string]map[string]unitstore.Assignment{}, placement: map[string]unitstore.Placement{},
		on: map[string][]*candidate{}, binding: map[string][]*candidate{}, live: map[string]bool{},
	}
}

// addMachine makes a live machine, with nothing on it yet, a choice.
func (p *plan) addMachine(id string) {
	if p.live[id] {
		return
	}
	p.live[id] = true
	if len(p.byLoad) == 0 {
		p.byLoad = append(p.byLoad, nil)
	}
	i, _ := slices.BinarySearch(p.byLoad[0], id)
	p.byLoad[0] = slices.Insert(p.byLoad[0], i, id)
}

func (p *plan) put(machine string, c *candidate) {
	if p.assign[machine] == nil {
		p.assign[machine] = map[string]unitstore.Assignment{}
	}
	n := len(p.assign[machine])
	p.assign[machine][c.name] = unitstore.Assignment{Name: c.name, Hash: c.file.Hash, Content: c.file.Content, Desired: c.desired}
	if len(p.assign[machine]) == n {
		return // already there (a unit is put on a machine once)
	}
	p.on[machine] = append(p.on[machine], c)
	if len(c.fleet.Conflicts) > 0 || len(c.fleet.Replaces) > 0 {
		p.binding[machine] = append(p.binding[machine], c)
	}
	if !p.live[machine] {
		return // a lost machine within its grace period: never a choice
	}
	// One more unit: from byLoad[n] to byLoad[n+1].
	i, _ := slices.BinarySearch(p.byLoad[n], machine)
	p.byLoad[n] = slices.Delete(p.byLoad[n], i, i+1)
	if len(p.byLoad) == n+1 {
		p.byLoad = append(p.byLoad, nil)
	}
	i, _ = slices.BinarySearch(p.byLoad[n+1], machine)
	p.byLoad[n+1] = slices.Insert(p.byLoad[n+1], i, machine)
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
// placed after it. A unit with no home that replaces one on a live machine
// (Replaces) takes that machine, and the replaced unit moves elsewhere.
func decide(snap *unitstore.Snapshot, machines []registry.Machine, dead map[string]bool) *plan {
	return decideWith(newFleetCache(), snap, machines, dead)
}

// decideWith is decide with a cache of parsed [X-Fleet] sections, which the
// engine keeps from one pass to the next: a unit's file never changes
// under its name and hash, so its section is read once.
func decideWith(fleets *fleetCache, snap *unitstore.Snapshot, machines []registry.Machine, dead map[string]bool) *plan {
	defer fleets.endPass()
	p := newPlan()
	byID := map[string]registry.Machine{}
	for _, m := range machines {
		byID[m.ID] = m
		p.addMachine(m.ID)
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
	var cands []*candidate
	byName := map[string]*candidate{}
	for _, name := range slices.Sorted(maps.Keys(snap.Units)) {
		u := snap.Units[name]
		if u.File.Content == "" || (u.Desired != unitstore.Loaded && u.Desired != unitstore.Launched) {
			continue
		}
		fl, err := fleets.get(name, u.File.Hash, u.File.Content)
		if err != nil {
			p.placement[name] = unitstore.Placement{Reason: "invalid unit: " + err.Error()}
			continue
		}
		c := &candidate{name: name, file: u.File, desired: u.Desired, fleet: fl, current: current[name]}
		cands = append(cands, c)
		byName[name] = c
	}
	replace(cands, byName, byID)
	// First every unit that can stay where it is stays (its machine alive,
	// or gone for less than the grace period), so a unit looking for a new
	// home never displaces one that has a home. Targets before followers.
	slices.SortStableFunc(cands, func(a, b *candidate) int {
		return cmp.Compare(len(a.fleet.MachineOf), len(b.fleet.MachineOf))
	})
	var homeless []*candidate
	for _, c := range cands {
		if c.current == "" || c.fleet.Global {
			homeless = append(homeless, c)
			continue
		}
		if m, alive := byID[c.current]; alive && fits(p, c, m) != "" {
			homeless = append(homeless, c)
			continue
		}
		p.put(c.current, c)
		p.placement[c.name] = unitstore.Placement{Machine: c.current}
	}
	// Then the rest: Global units everywhere they fit, then the others on
	// the least-loaded machine that fits, followers after their targets.
	slices.SortStableFunc(homeless, func(a, b *candidate) int {
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
					p.put(id, c)
					n++
				}
			}
			if n == 0 {
				p.placement[c.name] = unitstore.Placement{Reason: "global unit: no machine matches " + describe(c.fleet)}
			}
			continue
		}
		if best := leastLoaded(p, c, byID); best != "" {
			p.put(best, c)
			p.placement[c.name] = unitstore.Placement{Machine: best}
			continue
		}
		reasons := map[string]int{}
		for _, id := range ids {
			reasons[fits(p, c, byID[id])]++
		}
		p.placement[c.name] = unitstore.Placement{Reason: unschedulable(reasons, len(ids))}
	}
	return p
}

// leastLoaded returns the least-loaded machine that fits c (the first by
// id among equals), or "".
func leastLoaded(p *plan, c *candidate, byID map[string]registry.Machine) string {
	for _, ids := range p.byLoad {
		for _, id := range ids {
			if fits(p, c, byID[id]) == "" {
				return id
			}
		}
	}
	return ""
}

// replace applies Replaces, as fleet did: a unit with no home that
// replaces a unit placed on a live machine takes that machine, if the
// machine otherwise suits it (its own constraints, and the units that stay
// there), and the replaced unit loses its home, to be placed elsewhere by
// the usual rule; fits keeps the two apart from then on. A unit displaced
// this way may itself replace another. A unit that took a machine this
// way is not displaced in its turn, so a cycle of Replaces ends. Global
// units neither replace (fleet.go refuses it) nor are replaced: they are
// on every machine that matches, and stay there.
func replace(cands []*candidate, byName map[string]*candidate, byID map[string]registry.Machine) {
	var work []*candidate
	for _, c := range cands {
		if c.current == "" && len(c.fleet.Replaces) > 0 {
			work = append(work, c)
		}
	}
	if len(work) == 0 {
		return
	}
	residents := map[string][]*candidate{} // machine → units now on it
	for _, c := range cands {
		if c.current != "" && !c.fleet.Global {
			residents[c.current] = append(residents[c.current], c)
		}
	}
	took := map[string]bool{}
	for len(work) > 0 {
		a := work[0]
		work = work[1:]
		if a.current != "" || a.fleet.Global {
			continue
		}
		for _, name := range a.fleet.Replaces {
			b := byName[name]
			if b == nil || b.current == "" || b.fleet.Global || took[b.name] {
				continue
			}
			m, live := byID[b.current]
			if !live {
				continue // gone, within its grace period: nothing to take over yet
			}
			// Would m suit a with b gone and everything else there staying?
			stay := slices.DeleteFunc(slices.Clone(residents[m.ID]), func(r *candidate) bool { return r == b })
			trial := newPlan()
			for _, r := range stay {
				trial.put(m.ID, r)
			}
			if fits(trial, a, m) != "" {
				continue
			}
			residents[m.ID] = append(stay, a)
			a.current, b.current = m.ID, ""
			took[a.name] = true
			if len(b.fleet.Replaces) > 0 {
				work = append(work, b)
			}
			break
		}
	}
}

// fits returns "" if the unit may run on m, else the constraint that fails.
func fits(p *plan, c *candidate, m registry.Machine) string {
	f := &c.fleet
	if f.MachineID != "" && !strings.HasPrefix(m.ID, f.MachineID) {
		return "MachineID=" + f.MachineID
	}
	for key, values := range f.MachineMetadata {
		if !slices.Contains(values, m.Metadata[key]) {
			return "MachineMetadata " + key + "=" + strings.Join(values, "|")
		}
	}
	here := p.assign[m.ID]
	for _, target := range f.MachineOf {
		if _, ok := here[target]; !ok {
			return "MachineOf=" + target
		}
	}
	// Its own rules against every unit there, then the rules of the units
	// there against it: Conflicts and Replaces work both ways, as in fleet.
	if len(f.Conflicts) > 0 || len(f.Replaces) > 0 {
		for _, other := range p.on[m.ID] {
			if other.name == c.name {
				continue
			}
			for _, glob := range f.Conflicts {
				if unit.Match(glob, other.name) {
					return "Conflicts=" + glob
				}
			}
			if slices.Contains(f.Replaces, other.name) {
				return "Replaces=" + other.name
			}
		}
	}
	for _, other := range p.binding[m.ID] {
		if other.name == c.name {
			continue
		}
		for _, glob := range other.fleet.Conflicts {
			if unit.Match(glob, c.name) {
				return "Conflicts=" + glob + " (of " + other.name + ")"
			}
		}
		if slices.Contains(other.fleet.Replaces, c.name) {
			return "Replaces=" + c.name + " (of " + other.name + ")"
		}
	}
	return ""
}

// fleetCache keeps parsed [X-Fleet] sections by unit name and file hash,
// for as long as they are used: an entry not used during a pass is dropped
// at its end.
type fleetCache struct {
	cur, prev map[fleetKey]fleetEntry
}

type fleetKey struct{ name, hash string }

type fleetEntry struct {
	fleet unit.Fleet
	err   error
}

func newFleetCache() *fleetCache {
	return &fleetCache{cur: map[fleetKey]fleetEntry{}, prev: map[fleetKey]fleetEntry{}}
}

// get returns the unit's section, parsing it unless it is cached. A unit
// without a hash is parsed every time.
func (fc *fleetCache) get(name, hash, content string) (unit.Fleet, error) {
	if hash == "" {
		return fleetOf(name, content)
	}
	k := fleetKey{name, hash}
	e, ok := fc.cur[k]
	if !ok {
		if e, ok = fc.prev[k]; !ok {
			e.fleet, e.err = fleetOf(name, content)
		}
		fc.cur[k] = e
	}
	return e.fleet, e.err
}

// endPass forgets the entries that the pass did not use.
func (fc *fleetCache) endPass() {
	fc.prev, fc.cur = fc.cur, map[fleetKey]fleetEntry{}
}

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
