package provision

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/unit"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/provision/config"
	"github.com/corral-dev/corral/provision/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ensureServices converges the units of the file's service blocks, as
// clusterctl would: units the file asks for and the cluster lacks are
// submitted and started; units provision made that the file no longer asks
// for are destroyed; a unit whose content changed is replaced, one at a
// time, each active before the next goes, so a service never loses more
// than one instance at once. Units provision did not make are never
// touched. timeout bounds each wait for a unit's state.
func (c *cluster) ensureServices(ctx context.Context, timeout time.Duration) error {
	want := c.cfg.Units()
	if len(want) == 0 && len(c.state.Units) == 0 {
		return nil
	}
	cli, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	snap, err := unitstore.Read(ctx, cli)
	if err != nil {
		return err
	}
	s := &services{c: c, cli: cli, timeout: timeout}

	// Refused before anything changes: a unit of the same name that a
	// user submitted by hand is theirs, and replacing it would take it.
	for _, u := range want {
		if c.state.Unit(u.Name) == nil && submitted(snap, u.Name) {
			return fmt.Errorf("service %s: unit %s was submitted outside provision (by clusterctl?); "+
				"provision only manages units it created: destroy it (clusterctl destroy %s) or rename the service",
				u.Service, u.Name, u.Name)
		}
	}

	wanted := map[string]bool{}
	for _, u := range want {
		wanted[u.Name] = true
	}
	// Newest first, so instances 5→3 takes @5, then @4.
	for _, u := range slices.Backward(slices.Clone(c.state.Units)) {
		if !wanted[u.Name] {
			if err := s.destroy(ctx, u.Name); err != nil {
				return err
			}
		}
	}

	var added []config.Unit
	var replaced []config.Unit
	var unchanged int
	for _, u := range want {
		hash, err := unitHash(u)
		if err != nil {
			return err
		}
		cur := snap.Units[u.Name]
		switch rec := c.state.Unit(u.Name); {
		case rec == nil || !submitted(snap, u.Name):
			// New, or recorded by a run that stopped before submitting
			// it (or destroyed by hand since): submit it afresh.
			added = append(added, u)
		case cur.File.Hash != hash:
			replaced = append(replaced, u)
		case cur.Desired != u.State:
			if err := s.start(ctx, u, hash, "~", "(state changed)"); err != nil {
				return err
			}
		default:
			unchanged++
		}
	}

	// New units start together: none of them runs yet, so there is
	// nothing to keep up while they come.
	if err := s.startAll(ctx, added); err != nil {
		return err
	}
	for _, u := range replaced {
		hash, _ := unitHash(u)
		if err := s.replace(ctx, u, hash); err != nil {
			return err
		}
	}
	fmt.Fprintf(c.opts.Out, "services: %d units (%d started, %d replaced, %d destroyed, %d unchanged)\n",
		len(want), len(added), len(replaced), s.destroyed, unchanged)
	return nil
}

// services is one run of ensureServices.
type services struct {
	c         *cluster
	cli       *clientv3.Client
	timeout   time.Duration
	machines  map[string]registry.Machine // by id, for progress lines
	destroyed int
}

// submitted reports whether the cluster holds a unit file of that name.
func submitted(snap *unitstore.Snapshot, name string) bool {
	u := snap.Units[name]
	return u != nil && u.File.Hash != ""
}

// unitHash is the hash clusterd keeps for the unit's content; the content
// was parsed when the file was loaded, so this does not fail in practice.
func unitHash(u config.Unit) (string, error) {
	f, err := unit.Parse(u.Name, []byte(u.Content))
	if err != nil {
		return "", fmt.Errorf("service %s: %w", u.Service, err)
	}
	return f.Hash(), nil
}

// record notes in the state that provision manages a unit with this
// content, before it is submitted: a run that stops half-way still knows
// the unit is its own.
func (s *services) record(name, hash string) error {
	if rec := s.c.state.Unit(name); rec != nil {
		rec.Hash = hash
	} else {
		s.c.state.Units = append(s.c.state.Units, state.Unit{Name: name, Hash: hash})
	}
	return s.c.dir.Save(s.c.state)
}

// submit stores a unit's file and desired state.
func (s *services) submit(ctx context.Context, u config.Unit, hash string) error {
	if err := s.record(u.Name, hash); err != nil {
		return err
	}
	if _, err := unitstore.Submit(ctx, s.cli, unitstore.UnitFile{Name: u.Name, Hash: hash, Content: u.Content}); err != nil {
		return fmt.Errorf("service %s: %w", u.Service, err)
	}
	if err := unitstore.SetDesired(ctx, s.cli, u.Name, u.State); err != nil {
		return fmt.Errorf("service %s: %w", u.Service, err)
	}
	return nil
}

// startAll submits units and waits until each reaches its desired state,
// printing a line for each as it does.
func (s *services) startAll(ctx context.Context, units []config.Unit) error {
	byState := map[string][]string{}
	for _, u := range units {
		hash, err := unitHash(u)
		if err != nil {
			return err
		}
		if err := s.submit(ctx, u, hash); err != nil {
			return err
		}
		byState[u.State] = append(byState[u.State], u.Name)
	}
	for _, desired := range []string{unitstore.Launched, unitstore.Loaded} {
		if names := byState[desired]; len(names) > 0 {
			if err := s.wait(ctx, names, desired, "+", ""); err != nil {
				return err
			}
		}
	}
	return nil
}

// start sets a submitted unit's desired state and waits for it.
func (s *services) start(ctx context.Context, u config.Unit, hash, mark, why string) error {
	if err := s.submit(ctx, u, hash); err != nil {
		return err
	}
	return s.wait(ctx, []string{u.Name}, u.State, mark, why)
}

// replace destroys a unit and starts its new content under the same name.
// The old copy must have stopped first: the new one then starts from its
// own file, never alongside the old one on another machine.
func (s *services) replace(ctx context.Context, u config.Unit, hash string) error {
	if _, err := unitstore.Destroy(ctx, s.cli, u.Name); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, s.timeout)
	err := unitstore.WaitGone(wctx, s.cli, u.Name)
	cancel()
	if err != nil {
		return fmt.Errorf("service %s: replacing %s: %w; re-run `provision up` to retry", u.Service, u.Name, err)
	}
	return s.start(ctx, u, hash, "~", "replaced (content changed)")
}

// destroy removes a unit provision made and no longer wants.
func (s *services) destroy(ctx context.Context, name string) error {
	if _, err := unitstore.Destroy(ctx, s.cli, name); err != nil {
		return fmt.Errorf("destroying %s: %w", name, err)
	}
	s.c.state.Units = slices.DeleteFunc(s.c.state.Units, func(u state.Unit) bool { return u.Name == name })
	if err := s.c.dir.Save(s.c.state); err != nil {
		return err
	}
	s.destroyed++
	fmt.Fprintf(s.c.opts.Out, "  - %s destroyed\n", name)
	return nil
}

// wait waits until the units reach desired, printing a progress line for
// each: "  + hello@4.service launched on core-2", or with why in place of
// the state, "  ~ hello@1.service replaced (content changed)".
func (s *services) wait(ctx context.Context, names []string, desired, mark, why string) error {
	wctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := unitstore.Wait(wctx, s.cli, names, desired, func(_ *unitstore.Snapshot, name, machine string) {
		if why != "" {
			fmt.Fprintf(s.c.opts.Out, "  %s %s %s on %s\n", mark, name, why, s.machineName(ctx, machine))
			return
		}
		fmt.Fprintf(s.c.opts.Out, "  %s %s %s on %s\n", mark, name, desired, s.machineName(ctx, machine))
	})
	if err != nil {
		return fmt.Errorf("services: %w (within %s); re-run `provision up` to retry", err, s.timeout)
	}
	return nil
}

// machineName names a machine by its node, reading the registry again
// only for a machine not seen yet.
func (s *services) machineName(ctx context.Context, id string) string {
	if _, ok := s.machines[id]; !ok {
		ms, _, err := registry.List(ctx, s.cli)
		if err == nil {
			s.machines = map[string]registry.Machine{}
			for _, m := range ms {
				s.machines[m.ID] = m
			}
		}
	}
	if m, ok := s.machines[id]; ok && m.Name != "" {
		return m.Name
	}
	return fmt.Sprintf("%.8s…", id)
}
