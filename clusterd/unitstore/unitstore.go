// Package unitstore keeps the cluster's units in etcd: what users submitted
// and asked for, where the engine placed each unit, and what the agents
// report. It is the one place that knows the key layout:
//
//	/corral/units/files/<unit>          the unit file, immutable once submitted (by hash)
//	/corral/units/desired/<unit>        inactive | loaded | launched (fleet's desired states)
//	/corral/units/placement/<unit>      where the engine put it, or why it couldn't
//	/corral/units/assign/<machine>/<unit>  one assignment: each agent watches only its own prefix
//	/corral/units/state/<machine>/<unit>   what the agent reports, under the agent's lease
package unitstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Key prefixes.
const (
	Prefix          = "/corral/units/"
	FilesPrefix     = Prefix + "files/"
	DesiredPrefix   = Prefix + "desired/"
	PlacementPrefix = Prefix + "placement/"
	AssignPrefix    = Prefix + "assign/"
	StatePrefix     = Prefix + "state/"
)

// Desired states, as fleet named them.
const (
	Inactive = "inactive" // known, not scheduled
	Loaded   = "loaded"   // scheduled to a machine, not started
	Launched = "launched" // scheduled and running
)

// ValidDesired reports whether s is one of fleet's desired states.
func ValidDesired(s string) bool { return s == Inactive || s == Loaded || s == Launched }

// UnitFile is a submitted unit.
type UnitFile struct {
	Name    string `json:"name"`
	Hash    string `json:"hash"`
	Content string `json:"content"`
}

// Placement is the engine's decision for one unit.
type Placement struct {
	Machine string `json:"machine,omitempty"` // "" when the unit fits nowhere
	Reason  string `json:"reason,omitempty"`  // why it fits nowhere
}

// Assignment tells one agent to hold a unit in a state. Revision is the etcd
// revision the engine decided on: an agent never acts on an assignment
// older than one it has already seen for that unit (fencing against a
// deposed engine's late writes).
type Assignment struct {
	Name     string `json:"name"`
	Hash     string `json:"hash"`
	Content  string `json:"content"`
	Desired  string `json:"desired"` // loaded or launched
	Revision int64  `json:"revision"`
}

// UnitState is what an agent reports for a unit it holds.
type UnitState struct {
	Name    string `json:"name"`
	Machine string `json:"machine"`
	Hash    string `json:"hash"`
	Active  string `json:"active"`
	Sub     string `json:"sub"`
}

// ErrExists is returned when a unit of the same name but other content exists.
var ErrExists = errors.New("a different unit of that name exists")

// Submit stores a unit file. Resubmitting the same content is a no-op;
// different content under the same name is refused, as fleet did: a
// running unit's definition never changes underneath it.
func Submit(ctx context.Context, c *clientv3.Client, f UnitFile) (created bool, err error) {
	b, _ := json.Marshal(f)
	key := FilesPrefix + f.Name
	resp, err := c.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b))).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return false, err
	}
	if resp.Succeeded {
		return true, nil
	}
	var old UnitFile
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 1 {
		json.Unmarshal(kvs[0].Value, &old)
	}
	if old.Hash != f.Hash {
		return false, fmt.Errorf("%w: %s is already submitted with hash %.7s (this one is %.7s); destroy it first: clusterctl destroy %s",
			ErrExists, f.Name, old.Hash, f.Hash, f.Name)
	}
	return false, nil
}

// SetDesired sets a submitted unit's desired state.
func SetDesired(ctx context.Context, c *clientv3.Client, name, state string) error {
	if !ValidDesired(state) {
		return fmt.Errorf("desired state %q: want inactive, loaded or launched", state)
	}
	resp, err := c.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(FilesPrefix+name), ">", 0)).
		Then(clientv3.OpPut(DesiredPrefix+name, state)).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("unit %s is not submitted", name)
	}
	return nil
}

// Destroy removes a unit: its file and desired state. The engine then
// withdraws its assignments and the agent stops it.
func Destroy(ctx context.Context, c *clientv3.Client, name string) (bool, error) {
	resp, err := c.Txn(ctx).Then(clientv3.OpDelete(FilesPrefix+name), clientv3.OpDelete(DesiredPrefix+name)).Commit()
	if err != nil {
		return false, err
	}
	return resp.Responses[0].GetResponseDeleteRange().Deleted > 0, nil
}

// Unit is everything the cluster knows about one unit.
type Unit struct {
	File      UnitFile
	Desired   string
	Placement *Placement
	States    []UnitState // one per machine that reports it (several for Global units)
}

// Snapshot is a consistent read of every unit, at one revision.
type Snapshot struct {
	Revision int64
	Units    map[string]*Unit
	// Assigned lists, per machine, the units assigned to it.
	Assigned map[string]map[string]Assignment
}

// Read takes a snapshot of all unit records in one read.
func Read(ctx context.Context, c *clientv3.Client) (*Snapshot, error) {
	resp, err := c.Get(ctx, Prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	s := &Snapshot{Revision: resp.Header.Revision, Units: map[string]*Unit{}, Assigned: map[string]map[string]Assignment{}}
	unit := func(name string) *Unit {
		u, ok := s.Units[name]
		if !ok {
			u = &Unit{File: UnitFile{Name: name}}
			s.Units[name] = u
		}
		return u
	}
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		switch {
		case strings.HasPrefix(key, FilesPrefix):
			json.Unmarshal(kv.Value, &unit(strings.TrimPrefix(key, FilesPrefix)).File)
		case strings.HasPrefix(key, DesiredPrefix):
			unit(strings.TrimPrefix(key, DesiredPrefix)).Desired = string(kv.Value)
		case strings.HasPrefix(key, PlacementPrefix):
			var p Placement
			json.Unmarshal(kv.Value, &p)
			unit(strings.TrimPrefix(key, PlacementPrefix)).Placement = &p
		case strings.HasPrefix(key, AssignPrefix):
			machine, name, _ := strings.Cut(strings.TrimPrefix(key, AssignPrefix), "/")
			var a Assignment
			json.Unmarshal(kv.Value, &a)
			if s.Assigned[machine] == nil {
				s.Assigned[machine] = map[string]Assignment{}
			}
			s.Assigned[machine][name] = a
		case strings.HasPrefix(key, StatePrefix):
			var st UnitState
			json.Unmarshal(kv.Value, &st)
			u := unit(st.Name)
			u.States = append(u.States, st)
		}
	}
	// Records of destroyed units (a state not yet withdrawn) have no file.
	return s, nil
}

// AssignKey is the key of one assignment.
func AssignKey(machine, unit string) string { return AssignPrefix + machine + "/" + unit }

// StateKey is the key of one reported state.
func StateKey(machine, unit string) string { return StatePrefix + machine + "/" + unit }

// Running reports whether the agent on machine reports u active.
func (u *Unit) Running(machine string) bool {
	for _, st := range u.States {
		if st.Machine == machine && st.Active == "active" {
			return true
		}
	}
	return false
}

// FileState is a submitted unit's STATE and TARGET as clusterctl
// list-unit-files shows them. clusterctl and clusterd's /metrics both take
// it from Snapshot.FileState, so the table and the metrics can never count
// a unit differently.
type FileState struct {
	// State is launched when the unit runs on a machine it is assigned
	// to, loaded when it is assigned, else inactive.
	State string
	// Machine is the machine State refers to: "" when inactive.
	Machine string
	// Unscheduled is the engine's reason when the unit is inactive
	// because it fits nowhere, else "".
	Unscheduled string
}

// FileState computes the named unit's FileState. A unit assigned to several
// machines (a Global unit) counts as launched when any copy runs; Machine
// is then the first such machine in id order, so output does not depend on
// map order.
func (s *Snapshot) FileState(name string) FileState {
	u := s.Units[name]
	fs := FileState{State: Inactive}
	for _, m := range slices.Sorted(maps.Keys(s.Assigned)) {
		if _, ok := s.Assigned[m][name]; !ok {
			continue
		}
		if u != nil && u.Running(m) {
			return FileState{State: Launched, Machine: m}
		}
		if fs.State == Inactive {
			fs = FileState{State: Loaded, Machine: m}
		}
	}
	// A reason next to an assignment is a moment stale (the engine's
	// write that withdraws the assignment is on its way): the assignment
	// is what holds now.
	if fs.State == Inactive && u != nil && u.Placement != nil {
		fs.Unscheduled = u.Placement.Reason
	}
	return fs
}

// Reached reports whether u is in the desired state: for loaded and
// launched, also the machine it is in that state on ("" for inactive).
func (s *Snapshot) Reached(u *Unit, desired string) (machine string, ok bool) {
	switch desired {
	case Inactive:
		for _, units := range s.Assigned {
			if _, ok := units[u.File.Name]; ok {
				return "", false
			}
		}
		return "", true
	case Loaded:
		for m, units := range s.Assigned {
			if a, ok := units[u.File.Name]; ok && a.Desired == Loaded && !u.Running(m) {
				return m, true
			}
		}
	case Launched:
		for m, units := range s.Assigned {
			if _, ok := units[u.File.Name]; ok && u.Running(m) {
				return m, true
			}
		}
	}
	return "", false
}

// Pending says why u has not reached a state yet, for timeout errors: the
// engine's reason when it fits nowhere, else what its agents report.
func (s *Snapshot) Pending(name string) string {
	u := s.Units[name]
	switch {
	case u == nil || u.File.Hash == "":
		return "not submitted"
	case u.Placement != nil && u.Placement.Reason != "":
		return "unscheduled: " + u.Placement.Reason
	case len(u.States) > 0:
		var states []string
		for _, st := range u.States {
			states = append(states, fmt.Sprintf("%s (%s) on %.8s", st.Active, st.Sub, st.Machine))
		}
		slices.Sort(states)
		return strings.Join(states, ", ")
	case u.Placement != nil && u.Placement.Machine != "":
		return fmt.Sprintf("placed on %.8s, no state reported yet", u.Placement.Machine)
	}
	return "waiting to be scheduled"
}

// Wait watches the unit records until each of names reaches desired,
// calling reached (which may be nil) for each as it does, in name order
// within one read. When ctx ends first, the error names every unit still
// pending and why (see Pending), so a timeout is never just "timed out".
func Wait(ctx context.Context, c *clientv3.Client, names []string, desired string, reached func(snap *Snapshot, name, machine string)) error {
	pending := map[string]bool{}
	for _, n := range names {
		pending[n] = true
	}
	for {
		snap, err := Read(ctx, c)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("timed out waiting for %s: %s", desired, strings.Join(slices.Sorted(maps.Keys(pending)), ", "))
			}
			return err
		}
		for _, name := range slices.Sorted(maps.Keys(pending)) {
			u := snap.Units[name]
			if u == nil || (u.File.Hash == "" && desired != Inactive) {
				continue
			}
			if m, ok := snap.Reached(u, desired); ok {
				if reached != nil {
					reached(snap, name, m)
				}
				delete(pending, name)
			}
		}
		if len(pending) == 0 {
			return nil
		}
		if !watchAfter(ctx, c, snap.Revision) {
			var why []string
			for name := range pending {
				why = append(why, name+": "+snap.Pending(name))
			}
			slices.Sort(why)
			return fmt.Errorf("timed out waiting for %s: %s", desired, strings.Join(why, "; "))
		}
	}
}

// watchAfter blocks until a unit record changes after rev, and reports
// false when ctx ends first. Each watch is cancelled on return, so a long
// wait does not pile up watchers on the server.
func watchAfter(ctx context.Context, c *clientv3.Client, rev int64) bool {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	select {
	case <-c.Watch(wctx, Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)):
		return ctx.Err() == nil
	case <-ctx.Done():
		return false
	}
}

// WaitGone watches until no machine holds or reports the unit any more:
// after Destroy, its agent has stopped it. A unit of the same name
// submitted after that starts afresh, never racing the old copy.
func WaitGone(ctx context.Context, c *clientv3.Client, name string) error {
	for {
		snap, err := Read(ctx, c)
		if err != nil {
			return err
		}
		_, unassigned := snap.Reached(&Unit{File: UnitFile{Name: name}}, Inactive)
		u := snap.Units[name]
		if unassigned && (u == nil || len(u.States) == 0) {
			return nil
		}
		if !watchAfter(ctx, c, snap.Revision) {
			why := "still assigned"
			if u != nil && len(u.States) > 0 {
				why = snap.Pending(name)
			}
			return fmt.Errorf("timed out waiting for %s to stop: %s", name, why)
		}
	}
}
