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
