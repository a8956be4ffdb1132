// Package metrics is clusterd's /metrics: the cluster's state in the
// Prometheus text format (machines, units by state, etcd membership and
// health, overlay leases and peers) and what the engine does (how long a
// unit waits for a machine, how many units moved off lost machines).
//
// The cluster-wide numbers come from Read, which provision status calls
// too, so the table and the metrics can never disagree on how they count.
package metrics

import (
	"context"
	"maps"
	"slices"

	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/unitstore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Unscheduled is the state of a unit the engine could place nowhere
// (list-unit-files shows it inactive, with "unscheduled: why" as target).
const Unscheduled = "unscheduled"

// NoState is the active value of a unit no machine reports (list-units
// has no row for it).
const NoState = "none"

// NoRole is the role label of machines without a role in their metadata.
const NoRole = "none"

// UnitKey is one corral_units series: a unit's STATE as list-unit-files
// shows it (launched, loaded, inactive, or unscheduled), and its ACTIVE as
// list-units shows it (active, failed, activating, …, or none).
type UnitKey struct {
	State  string
	Active string
}

// Cluster is the cluster-wide picture, as read from etcd at one moment.
type Cluster struct {
	// Machines counts registered machines by their metadata's role.
	Machines map[string]int
	// Units counts submitted units by state and active.
	Units map[UnitKey]int
	// EtcdMembers counts every etcd member, EtcdVoters the non-learners.
	EtcdMembers, EtcdVoters int
	// OverlayLeases counts the overlay's subnet leases; LeaseOwners are
	// their machines' ids, in the same order.
	OverlayLeases int
	LeaseOwners   []string
}

// MachineCount is the number of machines, whatever their role.
func (c *Cluster) MachineCount() int {
	n := 0
	for _, v := range c.Machines {
		n += v
	}
	return n
}

// UnitsIn counts units in a state (all active values).
func (c *Cluster) UnitsIn(state string) int {
	n := 0
	for k, v := range c.Units {
		if k.State == state {
			n += v
		}
	}
	return n
}

// Read reads the cluster-wide picture from etcd.
func Read(ctx context.Context, cli *clientv3.Client) (*Cluster, error) {
	c := &Cluster{Machines: map[string]int{}, Units: map[UnitKey]int{}}
	ms, _, err := registry.List(ctx, cli)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		role := m.Metadata["role"]
		if role == "" {
			role = NoRole
		}
		c.Machines[role]++
	}
	snap, err := unitstore.Read(ctx, cli)
	if err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(snap.Units)) {
		u := snap.Units[name]
		if u.File.Hash == "" {
			continue // a destroyed unit's last state, not yet withdrawn
		}
		c.Units[UnitKey{State: UnitState(snap, name), Active: UnitActive(u)}]++
	}
	members, err := cli.MemberList(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range members.Members {
		c.EtcdMembers++
		if !m.IsLearner {
			c.EtcdVoters++
		}
	}
	leases, _, err := subnet.List(ctx, cli)
	if err != nil {
		return nil, err
	}
	c.OverlayLeases = len(leases)
	for _, l := range leases {
		c.LeaseOwners = append(c.LeaseOwners, l.MachineID)
	}
	return c, nil
}

// UnitState is a submitted unit's state label in corral_units: its STATE
// as clusterctl list-unit-files shows it (unitstore's FileState, the one
// computation both use), or Unscheduled when that shows it inactive with
// "unscheduled: why" as its target.
func UnitState(snap *unitstore.Snapshot, name string) string {
	fs := snap.FileState(name)
	if fs.Unscheduled != "" {
		return Unscheduled
	}
	return fs.State
}

// UnitActive sums up a unit's ACTIVE column in list-units: NoState when no
// machine reports it, "active" when every machine that does says active,
// else the first other value (sorted), so a failed copy of a global unit
// shows.
func UnitActive(u *unitstore.Unit) string {
	if len(u.States) == 0 {
		return NoState
	}
	var other []string
	for _, st := range u.States {
		if st.Active != "active" {
			other = append(other, st.Active)
		}
	}
	if len(other) == 0 {
		return "active"
	}
	slices.Sort(other)
	return other[0]
}
