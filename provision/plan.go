package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/corral-dev/corral/providers/local"
	"github.com/corral-dev/corral/provision/config"
	"github.com/corral-dev/corral/provision/plan"
	"github.com/corral-dev/corral/provision/progress"
)

// PlanOptions tune `provision plan`.
type PlanOptions struct {
	Options
	JSON bool // print the plan as JSON
	// Verbose lists the provider's resources that stay as they are, too
	// (aws); otherwise they are only counted.
	Verbose bool
}

// Plan prints what up would change, without changing anything (no lock
// is taken: nothing is written). It reports whether there are changes,
// for --detailed-exitcode.
func Plan(ctx context.Context, opts PlanOptions) (changes bool, err error) {
	c, err := open(opts.Options)
	if err != nil {
		return false, err
	}
	t, err := c.target(ctx)
	if err != nil {
		return false, err
	}
	pl, err := c.plan(ctx, t)
	if err != nil {
		return false, err
	}
	if opts.JSON {
		return !pl.Empty(), pl.WriteJSON(c.opts.Out)
	}
	if err := pl.WriteText(c.opts.Out, progress.IsTerminal(c.opts.Out) && os.Getenv("NO_COLOR") == ""); err != nil {
		return false, err
	}
	infra := false
	if p, ok := t.(infraPlanner); ok {
		if infra, err = p.writeInfraPlan(ctx, c.opts.Out, opts.Verbose); err != nil {
			return false, err
		}
	}
	return !pl.Empty() || infra, nil
}

// infraPlanner is a target with infrastructure of its own to plan (aws):
// it writes what up would change there, and reports whether anything.
type infraPlanner interface {
	writeInfraPlan(ctx context.Context, w io.Writer, verbose bool) (bool, error)
}

// plan compares the file with the state and with what the provider has
// live, and decides what up must change.
func (c *cluster) plan(ctx context.Context, t target) (*plan.Plan, error) {
	insts, err := t.Inventory(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing the provider's nodes: %w", err)
	}
	live := map[string]plan.Live{}
	for _, in := range insts {
		live[in.Name] = plan.Live{Running: in.Running, Detail: in.Detail}
	}
	return c.planWith(live, t.inPlace())
}

// planWith is the plan against live, the provider's inventory; nil
// leaves the provider out (what the file and the state alone decide).
func (c *cluster) planWith(live map[string]plan.Live, inPlace bool) (*plan.Plan, error) {
	pl := &plan.Plan{Cluster: c.cfg.Cluster.Name, Provider: c.cfg.Provider.Type}
	if _, err := os.Stat(c.tokenFile()); err != nil {
		pl.Changes = append(pl.Changes, plan.Change{Kind: plan.Cluster, Name: c.cfg.Cluster.Name, Action: plan.Create,
			Reason: "CA, join token, admin certificate"})
	}
	in := plan.Nodes{Live: live, InPlace: inPlace}
	for _, g := range c.cfg.NodeGroups {
		in.Groups = append(in.Groups, plan.Group{Name: g.Name, Capacity: g.DesiredCapacity, Boot: c.groupBoot(g), Names: g.NodeNames()})
	}
	for _, n := range c.state.Nodes {
		in.State = append(in.State, plan.Existing{Name: n.Name, Group: n.Group, Index: n.Index, Created: n.Created, Boot: n.Boot})
	}
	pl.Changes = append(pl.Changes, plan.NodeChanges(in)...)

	if c.cfg.Network != nil && (c.local == nil || c.local.Isolation == local.Netns) {
		if d := c.networkDigest(); c.state.Network != d {
			ch := plan.Change{Kind: plan.Network, Name: c.cfg.Network.CIDR.String(), Action: plan.Create,
				Reason: "overlay " + c.cfg.Network.Backend}
			if c.state.Network != "" {
				ch.Action, ch.Reason = plan.Update, "network block changed"
			}
			pl.Changes = append(pl.Changes, ch)
		}
	}

	var want, have []plan.Unit
	for _, u := range c.cfg.Units() {
		hash, err := unitHash(u)
		if err != nil {
			return nil, err
		}
		want = append(want, plan.Unit{Name: u.Name, Service: u.Service, Hash: hash})
	}
	for _, u := range c.state.Units {
		have = append(have, plan.Unit{Name: u.Name, Hash: u.Hash})
	}
	pl.Changes = append(pl.Changes, plan.ServiceChanges(want, have)...)
	return pl, nil
}

// group returns the file's node group of that name, or nil.
func (c *cluster) group(name string) *config.NodeGroup {
	for i := range c.cfg.NodeGroups {
		if c.cfg.NodeGroups[i].Name == name {
			return &c.cfg.NodeGroups[i]
		}
	}
	return nil
}

// groupBoot is the boot config the group gives its nodes, field by field,
// each field a digest of what it renders to. Only what the file sets is
// in it: what a node is given from the state (its address, its etcd
// role, the servers it joins through) changes as the cluster does, and a
// node is not replaced for that.
func (c *cluster) groupBoot(g config.NodeGroup) plan.Fingerprint {
	f := plan.Fingerprint{
		"metadata":            digest(c.metadataOf(g)),
		"userdata":            digest(string(g.Userdata)),
		"machine_ttl":         digest(c.cfg.Cluster.MachineTTL.String()),
		"ssh_authorized_keys": digest(strings.Join(c.cfg.Cluster.SSHAuthorizedKeys, "\n")),
	}
	for _, file := range g.Files {
		f["file "+file.Path] = digest(fmt.Sprintf("%o %s\n", file.Mode, file.Owner), string(file.Content))
	}
	for _, u := range g.Units {
		f["unit "+u.Name] = digest(fmt.Sprint(u.Enabled), u.Content)
	}
	return f
}

// metadataOf is a group's metadata as clusterd's --metadata takes it.
func (c *cluster) metadataOf(g config.NodeGroup) string {
	var pairs []string
	for _, k := range slices.Sorted(maps.Keys(g.Metadata)) {
		pairs = append(pairs, k+"="+g.Metadata[k])
	}
	return strings.Join(pairs, ",")
}

// networkDigest identifies the overlay configuration the file asks for.
func (c *cluster) networkDigest() string {
	b, _ := json.Marshal(networkConfig(c.cfg.Network))
	return digest(string(b))
}

// digest is a short hash of its parts, for comparing, not for security.
func digest(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
