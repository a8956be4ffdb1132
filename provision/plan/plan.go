// Package plan decides what `provision up` must change to bring a cluster
// from what it has (the state file, and what the provider finds live) to
// what its file asks for, and prints that decision for people and for
// machines. It computes; it does not act: up executes the plan it shows.
//
// Node groups behave as an auto-scaling group would: a group has a count
// and one boot configuration. Raising the count creates nodes under the
// lowest free names, lowering it deletes the newest, and a node whose boot
// configuration differs from the group's is replaced by a new node, one at
// a time (rolling), the new one joined and healthy before the old one goes.
package plan

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Action is what happens to one resource.
type Action string

// The actions, in the order up carries them out.
const (
	Create  Action = "create"
	Update  Action = "update"  // in place
	Delete  Action = "delete"  // scale-in: the newest first
	Replace Action = "replace" // a new node first, then the old one goes
)

// Kind is what sort of resource a change is about.
type Kind string

// The kinds of resource a plan has.
const (
	Cluster Kind = "cluster" // the CA, the join token, the provider's shared resources
	Node    Kind = "node"
	Network Kind = "network" // the overlay's configuration
	Service Kind = "service" // a unit of a service block
)

// Change is one resource's change.
type Change struct {
	Kind   Kind   `json:"kind"`
	Name   string `json:"name"`
	Action Action `json:"action"`
	Group  string `json:"group,omitempty"`
	// Reason says why, in words: "desired_capacity 3 → 5",
	// "boot config changed: file /etc/motd".
	Reason string `json:"reason,omitempty"`
	// Fields are the rendered fields whose change forces a replace or an
	// update, e.g. "file /etc/motd".
	Fields []string `json:"fields,omitempty"`
	// Drift says how the live resource differs from the state, if it does.
	Drift string `json:"drift,omitempty"`
	// Replacement names the node that takes a replaced node's place.
	Replacement string `json:"replacement,omitempty"`
}

// Plan is every change, in the order up makes them.
type Plan struct {
	Cluster  string   `json:"cluster"`
	Provider string   `json:"provider"`
	Changes  []Change `json:"changes"`
}

// Empty reports whether there is nothing to do.
func (p *Plan) Empty() bool { return len(p.Changes) == 0 }

// Count is how many changes of each action the plan has.
func (p *Plan) Count() map[Action]int {
	n := map[Action]int{Create: 0, Update: 0, Replace: 0, Delete: 0}
	for _, c := range p.Changes {
		n[c.Action]++
	}
	return n
}

// Destructive reports whether the plan takes anything away: a delete or
// a replace, which up asks to confirm.
func (p *Plan) Destructive() bool {
	n := p.Count()
	return n[Delete]+n[Replace] > 0
}

// Of returns the plan's changes of one kind and action, in order.
func (p *Plan) Of(k Kind, a Action) []Change {
	var out []Change
	for _, c := range p.Changes {
		if c.Kind == k && c.Action == a {
			out = append(out, c)
		}
	}
	return out
}

// Fingerprint is a node's boot configuration, field by field: field name
// ("metadata", "file /etc/motd") to a digest of its rendered value.
type Fingerprint map[string]string

// Diff lists the fields that differ between f and g, sorted. A nil f (a
// node recorded before fingerprints were) differs in nothing.
func (f Fingerprint) Diff(g Fingerprint) []string {
	if f == nil {
		return nil
	}
	var out []string
	for k, v := range f {
		if g[k] != v {
			out = append(out, k)
		}
	}
	for k := range g {
		if _, ok := f[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// Group is a node group as the file asks for it.
type Group struct {
	Name     string
	Capacity int
	Boot     Fingerprint
	// Names, when set, are the names nodes take first, in order (bare
	// metal's named machines); beyond them nodes are "<group>-<n>".
	Names []string
}

// Existing is a node the state records.
type Existing struct {
	Name    string
	Group   string
	Index   int
	Created time.Time
	Boot    Fingerprint
}

// Live is a node as the provider finds it.
type Live struct {
	Running bool
	Detail  string
}

// Nodes are the inputs of the node changes.
type Nodes struct {
	Groups []Group
	State  []Existing
	// Live is the provider's inventory by node name; nil when it was not
	// taken, and then nothing is reported as drifted.
	Live map[string]Live
	// InPlace says the provider installs a changed boot configuration on
	// the running machine (ssh) rather than booting a new one.
	InPlace bool
}

// NodeChanges decides the node changes: restarts of drifted nodes first
// (a member that is down weakens the quorum every later step needs), then
// creates, then deletes, then replacements, oldest first. Scale-in keeps
// the nodes whose boot config is current and, among equals, the oldest: so
// a run stopped half-way through a replacement resumes it (the outdated
// node goes, not the new one) instead of starting over.
func NodeChanges(in Nodes) []Change {
	var updates, deletes, creates, replaces []Change
	byGroup := map[string][]Existing{}
	for _, n := range in.State {
		byGroup[n.Group] = append(byGroup[n.Group], n)
	}
	want := map[string]Group{}
	for _, g := range in.Groups {
		want[g.Name] = g
	}
	inState := map[string]bool{}
	for _, n := range in.State {
		inState[n.Name] = true
	}
	// Groups the file dropped go whole.
	for _, name := range slices.Sorted(maps.Keys(byGroup)) {
		if _, ok := want[name]; ok {
			continue
		}
		for _, n := range newestFirst(byGroup[name]) {
			deletes = append(deletes, Change{Kind: Node, Name: n.Name, Action: Delete, Group: name,
				Reason: fmt.Sprintf("node group %q is no longer in the file", name)})
		}
	}
	for _, g := range in.Groups {
		have := keepFirst(byGroup[g.Name], g.Boot)
		keep := have[:min(len(have), g.Capacity)]
		for _, n := range slices.Backward(have[len(keep):]) {
			why := "newest first"
			if len(n.Boot.Diff(g.Boot)) > 0 {
				why = "outdated boot config first"
			}
			deletes = append(deletes, Change{Kind: Node, Name: n.Name, Action: Delete, Group: g.Name,
				Reason: fmt.Sprintf("desired_capacity %d → %d, %s", len(have), g.Capacity, why)})
		}
		names := freeNames(g, have)
		for range g.Capacity - len(keep) {
			creates = append(creates, Change{Kind: Node, Name: names(), Action: Create, Group: g.Name,
				Reason: fmt.Sprintf("desired_capacity %d → %d", len(have), g.Capacity)})
		}
		for _, n := range oldestFirst(keep) {
			fields := n.Boot.Diff(g.Boot)
			drift := in.drift(n.Name)
			switch {
			case len(fields) > 0 && in.InPlace:
				updates = append(updates, Change{Kind: Node, Name: n.Name, Action: Update, Group: g.Name,
					Reason: "boot config changed: " + strings.Join(fields, ", "), Fields: fields, Drift: drift})
			case len(fields) > 0:
				replaces = append(replaces, Change{Kind: Node, Name: n.Name, Action: Replace, Group: g.Name,
					Reason: "boot config changed: " + strings.Join(fields, ", "), Fields: fields, Drift: drift,
					Replacement: names()})
			case drift != "":
				updates = append(updates, Change{Kind: Node, Name: n.Name, Action: Update, Group: g.Name,
					Reason: "start it again", Drift: drift})
			}
		}
	}
	// What the provider has and the state does not know (a run that died
	// before saving, a state file lost) goes: nothing unrecorded is kept.
	for _, name := range slices.Sorted(maps.Keys(in.Live)) {
		if !inState[name] {
			deletes = append(deletes, Change{Kind: Node, Name: name, Action: Delete,
				Reason: "not in the state", Drift: "found live, not recorded in the state"})
		}
	}
	return slices.Concat(updates, creates, deletes, replaces)
}

// drift says how a recorded node differs live, or "" if it does not (or
// nothing was looked at).
func (in Nodes) drift(name string) string {
	if in.Live == nil {
		return ""
	}
	l, ok := in.Live[name]
	switch {
	case !ok:
		return "recorded in the state, not found live"
	case !l.Running && l.Detail != "":
		return "not running (" + l.Detail + ")"
	case !l.Running:
		return "not running"
	}
	return ""
}

func oldestFirst(ns []Existing) []Existing {
	out := slices.Clone(ns)
	slices.SortStableFunc(out, func(a, b Existing) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.Index, b.Index))
	})
	return out
}

func newestFirst(ns []Existing) []Existing {
	out := oldestFirst(ns)
	slices.Reverse(out)
	return out
}

// keepFirst orders a group's nodes by how much it wants to keep them: the
// current boot config oldest first, then the outdated newest first. Read
// backwards, the order to delete them in: the oldest outdated node first
// (where a rolling replacement resumes), and among current ones the newest.
func keepFirst(ns []Existing, boot Fingerprint) []Existing {
	var current, outdated []Existing
	for _, n := range oldestFirst(ns) {
		if len(n.Boot.Diff(boot)) > 0 {
			outdated = append(outdated, n)
		} else {
			current = append(current, n)
		}
	}
	slices.Reverse(outdated)
	return append(current, outdated...)
}

// freeNames hands out the group's names in order (see Group.Names), then
// "<group>-<n>" for the lowest n no node of the group has, one per call.
func freeNames(g Group, have []Existing) func() string {
	taken := map[string]bool{}
	for _, n := range have {
		taken[n.Name] = true
	}
	next := 1
	return func() string {
		for _, name := range g.Names {
			if !taken[name] {
				taken[name] = true
				return name
			}
		}
		for taken[g.Name+"-"+strconv.Itoa(next)] {
			next++
		}
		name := g.Name + "-" + strconv.Itoa(next)
		taken[name] = true
		return name
	}
}

// Unit is a unit of a service block: in the file (Hash is its content's)
// or recorded in the state.
type Unit struct {
	Name    string
	Service string
	Hash    string
}

// ServiceChanges decides the unit changes: units the file dropped are
// destroyed (newest first), new ones created, changed ones replaced.
func ServiceChanges(want, have []Unit) []Change {
	var deletes, creates, replaces []Change
	wanted := map[string]Unit{}
	for _, u := range want {
		wanted[u.Name] = u
	}
	recorded := map[string]Unit{}
	for _, u := range have {
		recorded[u.Name] = u
		if _, ok := wanted[u.Name]; !ok {
			deletes = append(deletes, Change{Kind: Service, Name: u.Name, Action: Delete, Reason: "no longer in the file"})
		}
	}
	slices.Reverse(deletes)
	for _, u := range want {
		switch r, ok := recorded[u.Name]; {
		case !ok:
			creates = append(creates, Change{Kind: Service, Name: u.Name, Action: Create, Reason: "service " + u.Service})
		case r.Hash != u.Hash:
			replaces = append(replaces, Change{Kind: Service, Name: u.Name, Action: Replace, Reason: "content changed"})
		}
	}
	return slices.Concat(deletes, creates, replaces)
}
