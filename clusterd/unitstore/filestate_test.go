package unitstore_test

import (
	"testing"

	"github.com/corral-dev/corral/clusterd/unitstore"
)

// TestFileState checks the STATE and TARGET that clusterctl
// list-unit-files and /metrics both take from FileState.
func TestFileState(t *testing.T) {
	running := func(m string) unitstore.UnitState {
		return unitstore.UnitState{Name: "web.service", Machine: m, Active: "active"}
	}
	failed := func(m string) unitstore.UnitState {
		return unitstore.UnitState{Name: "web.service", Machine: m, Active: "failed"}
	}
	assigned := func(ms ...string) map[string]map[string]unitstore.Assignment {
		out := map[string]map[string]unitstore.Assignment{}
		for _, m := range ms {
			out[m] = map[string]unitstore.Assignment{"web.service": {Name: "web.service"}}
		}
		return out
	}
	cases := []struct {
		name     string
		unit     unitstore.Unit
		assigned map[string]map[string]unitstore.Assignment
		want     unitstore.FileState
	}{
		{"submitted only", unitstore.Unit{}, nil, unitstore.FileState{State: unitstore.Inactive}},
		{"unscheduled", unitstore.Unit{Placement: &unitstore.Placement{Reason: "no machine fits"}}, nil,
			unitstore.FileState{State: unitstore.Inactive, Unscheduled: "no machine fits"}},
		{"assigned, not running", unitstore.Unit{States: []unitstore.UnitState{failed("b")}}, assigned("b"),
			unitstore.FileState{State: unitstore.Loaded, Machine: "b"}},
		{"running", unitstore.Unit{States: []unitstore.UnitState{running("b")}}, assigned("b"),
			unitstore.FileState{State: unitstore.Launched, Machine: "b"}},
		// A state reported from a machine the unit is no longer assigned
		// to does not make it launched.
		{"running elsewhere", unitstore.Unit{States: []unitstore.UnitState{running("a")}}, assigned("b"),
			unitstore.FileState{State: unitstore.Loaded, Machine: "b"}},
		// Global: launched when any copy runs, on the first such machine.
		{"global", unitstore.Unit{States: []unitstore.UnitState{failed("a"), running("c"), running("b")}}, assigned("c", "a", "b"),
			unitstore.FileState{State: unitstore.Launched, Machine: "b"}},
		{"global, none running", unitstore.Unit{}, assigned("c", "a", "b"),
			unitstore.FileState{State: unitstore.Loaded, Machine: "a"}},
		// A reason beside an assignment is stale: the assignment holds.
		{"stale reason", unitstore.Unit{Placement: &unitstore.Placement{Reason: "no machine fits"}}, assigned("a"),
			unitstore.FileState{State: unitstore.Loaded, Machine: "a"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := c.unit
			u.File = unitstore.UnitFile{Name: "web.service", Hash: "abc"}
			snap := &unitstore.Snapshot{Units: map[string]*unitstore.Unit{"web.service": &u}, Assigned: c.assigned}
			if got := snap.FileState("web.service"); got != c.want {
				t.Errorf("FileState = %+v, want %+v", got, c.want)
			}
		})
	}
	empty := &unitstore.Snapshot{}
	if got := empty.FileState("gone.service"); got != (unitstore.FileState{State: unitstore.Inactive}) {
		t.Errorf("FileState of an unknown unit = %+v, want inactive", got)
	}
}
