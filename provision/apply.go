package provision

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/clusterd/rebootlock"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/store"
	"github.com/corral-dev/corral/providers"
	"github.com/corral-dev/corral/provision/plan"
	"github.com/corral-dev/corral/provision/progress"
	"github.com/corral-dev/corral/provision/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// UpOptions tune `provision up`.
type UpOptions struct {
	Options
	// Timeout bounds each wait: for a node to join, for the network, for a
	// service's units.
	Timeout time.Duration
	// AutoApprove applies a plan that deletes or replaces nodes without
	// asking. Without it such a plan is confirmed on a terminal (In) and
	// refused anywhere else.
	AutoApprove bool
	In          io.Reader
	// NoWait returns once the provider's infrastructure has converged and
	// every node has its machine, without waiting for nodes to join, and
	// skips what needs the cluster's etcd (membership, removals' etcd
	// step, replacements, network, logs, backups, services): for
	// emulators that boot nothing.
	NoWait  bool
	restore *restoreSource // set by Restore (backup.go)
}

// ErrNotApproved is a destructive plan that was not confirmed.
var ErrNotApproved = errors.New("not applied")

// Up converges the cluster to the file. It shows the plan, and then
// carries it out in order: the cluster's PKI and the provider's shared
// resources; drifted nodes started again and new nodes created, together;
// nodes the file no longer wants removed (etcd membership first); nodes
// whose boot config changed replaced one at a time; the overlay's
// configuration; the services. The state is saved after every step, so
// re-running after a failure, or after the run was killed, picks up where
// it stopped.
func Up(ctx context.Context, opts UpOptions) error {
	start := time.Now()
	c, err := open(opts.Options)
	if err != nil {
		return err
	}
	c.restore = opts.restore
	// The provider first: one that can't work here (no vagrant, no
	// namespaces) is reported before anything is written.
	t, err := c.target(ctx)
	if err != nil {
		return err
	}
	defer t.release()
	lock, err := c.dir.Lock("up")
	if err != nil {
		return err
	}
	defer lock.Unlock()
	if lock.Abandoned != "" {
		fmt.Fprintf(c.opts.Err, "note: the last run on this cluster (%s) ended without finishing; continuing from the state it saved\n", lock.Abandoned)
	}
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Minute
	}
	out := c.opts.Out
	fmt.Fprintf(out, "cluster %q: %s\n", c.cfg.Cluster.Name, t.describe())
	if !opts.NoWait {
		if err := c.followMembership(ctx, t); err != nil {
			return err
		}
	}
	pl, err := c.plan(ctx, t)
	if err != nil {
		return err
	}
	tty := progress.IsTerminal(out)
	if !pl.Empty() {
		pl.WriteText(out, tty)
		fmt.Fprintln(out)
	}
	if pl.Destructive() && !opts.AutoApprove {
		if err := confirm(opts.In, out, pl); err != nil {
			return err
		}
	}
	a := &apply{c: c, t: t, show: progress.New(out, tty), timeout: opts.Timeout, start: start, noWait: opts.NoWait}
	if err := a.run(ctx, pl); err != nil {
		return err
	}
	if o, ok := t.(outputWriter); ok {
		o.writeOutputs(out)
	}
	if opts.NoWait {
		fmt.Fprintf(out, "cluster %q: infrastructure converged and %d nodes have machines (%.1fs); --no-wait: not waiting for them to join, and membership, network, logs, backups and services were not converged; run up without --no-wait for that\n",
			c.cfg.Cluster.Name, len(c.state.Nodes), time.Since(start).Seconds())
		return nil
	}
	ms, err := a.machines(ctx)
	if err != nil {
		return err
	}
	members := 0
	for _, m := range ms {
		if m.Member {
			members++
		}
	}
	fmt.Fprintf(out, "cluster %q is up: %d machines, %d etcd members (%.1fs)\n\n", c.cfg.Cluster.Name, len(ms), members, time.Since(start).Seconds())
	self, ctl := invokedAs()
	fmt.Fprintf(out, "Use it:\n  eval \"$(%s env %s)\"\n  %s list-machines\n  %s set /foo/bar hello --ttl 30\nRemove it:\n  %s down %s\n",
		self, fileArgs(c.opts), ctl, ctl, self, fileArgs(c.opts))
	return nil
}

// confirm asks to apply a plan that deletes or replaces nodes: only on a
// terminal, and only "yes" will do.
func confirm(in io.Reader, out io.Writer, pl *plan.Plan) error {
	f, ok := in.(*os.File)
	if !ok || !progress.IsTerminal(f) {
		return fmt.Errorf("%w: the plan deletes or replaces nodes; check it with `provision plan`, then run up with --auto-approve", ErrNotApproved)
	}
	n := pl.Count()
	fmt.Fprintf(out, "This deletes %d and replaces %d nodes or units. Apply? Only 'yes' is accepted: ", n[plan.Delete], n[plan.Replace])
	line, _ := bufio.NewReader(f).ReadString('\n')
	if strings.TrimSpace(line) != "yes" {
		return fmt.Errorf("%w: the answer was not yes", ErrNotApproved)
	}
	return nil
}

// apply is one run of a plan.
type apply struct {
	c       *cluster
	t       target
	show    *progress.Display
	timeout time.Duration
	start   time.Time
	cli     *clientv3.Client // once the cluster has members
	noWait  bool             // UpOptions.NoWait
}

func (a *apply) run(ctx context.Context, pl *plan.Plan) error {
	defer a.show.Done()
	defer func() {
		if a.cli != nil {
			a.cli.Close()
		}
	}()
	c := a.c
	if _, err := c.ensurePKI(); err != nil {
		return err
	}
	c.state.Cluster, c.state.Provider = c.cfg.Cluster.Name, c.cfg.Provider.Type
	c.state.Isolation = a.t.isolation()
	if err := c.dir.Save(c.state); err != nil {
		return err
	}
	if err := a.t.setup(ctx); err != nil {
		return err
	}
	// New nodes go into the state before anything is launched: a run
	// killed now leaves them recorded, and the next run launches them.
	var launch []string
	for _, ch := range pl.Of(plan.Node, plan.Create) {
		if err := a.record(ch.Name, ch.Group, ""); err != nil {
			return err
		}
		launch = append(launch, ch.Name)
	}
	for _, ch := range pl.Of(plan.Node, plan.Update) {
		launch = append(launch, ch.Name)
	}
	// Every recorded node is launched (a running, unchanged one is left
	// alone by its provider): that is what converges a node whose process
	// died after the plan was made.
	if err := a.launch(ctx, c.nodeNames(), launch); err != nil {
		return err
	}
	if a.noWait {
		return a.runNoWait(ctx, pl)
	}
	if err := a.putMembership(ctx); err != nil {
		return err
	}
	if err := a.checkRemovals(ctx, pl); err != nil {
		return err
	}
	for _, ch := range pl.Of(plan.Node, plan.Delete) {
		if err := a.remove(ctx, ch.Name); err != nil {
			return err
		}
	}
	for _, ch := range pl.Of(plan.Node, plan.Replace) {
		if err := a.replace(ctx, ch); err != nil {
			return err
		}
	}
	a.show.Done()
	if err := c.ensureNetwork(ctx, a.t, a.timeout); err != nil {
		return err
	}
	if err := c.ensureLogs(ctx, a.timeout); err != nil {
		return err
	}
	if err := c.ensureBackup(ctx, a.timeout); err != nil {
		return err
	}
	if err := c.ensureDeployHook(ctx, a.timeout); err != nil {
		return err
	}
	// Services last: units need the machines, and the overlay if any.
	return c.ensureServices(ctx, a.timeout)
}

// runNoWait finishes a --no-wait run: the nodes the file no longer wants
// go (without the etcd steps); replacements, which must wait for the new
// node's health, are left for a run that waits.
func (a *apply) runNoWait(ctx context.Context, pl *plan.Plan) error {
	for _, ch := range pl.Of(plan.Node, plan.Delete) {
		if err := a.remove(ctx, ch.Name); err != nil {
			return err
		}
	}
	for _, ch := range pl.Of(plan.Node, plan.Replace) {
		a.show.Set("node "+ch.Name, "kept", "--no-wait: not replaced, run up without it")
	}
	return nil
}

// machineNamer is a target whose nodes register their machines under
// another name than the node's.
type machineNamer interface {
	machineName(node string) string
}

// machineNameOf is the name node's machine registers under on t.
func machineNameOf(t target, node string) string {
	if mn, ok := t.(machineNamer); ok {
		return mn.machineName(node)
	}
	return node
}

// outputWriter is a target with outputs to show after up (aws: load
// balancers, bucket, nodes' instances).
type outputWriter interface {
	writeOutputs(w io.Writer)
}

// record adds a node to the state (see newNode).
func (a *apply) record(name, group string, replaces string) error {
	c := a.c
	n, err := c.newNode(a.t, name, group, replaces)
	if err != nil {
		return err
	}
	c.state.Nodes = append(c.state.Nodes, *n)
	detail := string(n.Role)
	if n.IP.IsValid() { // aws: the address comes with the instance
		detail = n.IP.String() + " " + detail
	}
	a.show.Set("node "+name, "waiting", detail)
	return c.dir.Save(c.state)
}

// newNode is a new node as the state records it, with its address and
// etcd role: a member while the cluster has fewer than it wants, else a
// client; a replacement takes the role of the node it replaces.
func (c *cluster) newNode(t target, name, group, replaces string) (*state.Node, error) {
	n := state.Node{Name: name, Group: group, Created: time.Now().UTC(), Role: state.Client}
	g := c.group(group)
	if i := slices.Index(g.NodeNames(), name); i >= 0 {
		n.Index = i + 1 // a named machine: its place in the file
	} else {
		fmt.Sscanf(strings.TrimPrefix(name, group+"-"), "%d", &n.Index)
	}
	if old := c.state.Node(replaces); old != nil {
		n.Role = old.Role
	} else if len(c.state.Members()) < c.cfg.Cluster.EtcdMembers {
		n.Role = state.Member
	}
	if g != nil {
		n.Boot = c.groupBoot(*g)
	}
	return &n, t.assign(&n, c.state.Nodes)
}

// launch makes every named node run, all at once (members of a new
// cluster need each other to form a quorum), and waits until the ones in
// shown have joined, showing their progress. A node that fails is
// reported with its cause as soon as the provider hears of it.
func (a *apply) launch(ctx context.Context, names, shown []string) error {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	var reports <-chan providers.Report
	if r, ok := a.t.(providers.Reporter); ok {
		reports = r.Reports()
	}
	show := map[string]bool{}
	for _, n := range shown {
		show[n] = true
	}
	specs := make([]providers.NodeSpec, 0, len(names))
	for _, name := range names {
		spec, err := a.c.spec(a.t, *a.c.state.Node(name))
		if err != nil {
			return err
		}
		specs = append(specs, spec)
	}
	if p, ok := a.t.(providers.Preparer); ok {
		if err := p.Prepare(ctx, specs); err != nil {
			return err
		}
	}
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, spec := range specs {
		wg.Go(func() {
			if show[spec.Name] {
				a.show.Set("node "+spec.Name, "creating", "")
			}
			if errs[i] = a.t.Launch(ctx, spec); errs[i] != nil {
				errs[i] = fmt.Errorf("node %s: %w", spec.Name, errs[i])
				a.show.Set("node "+spec.Name, "failed", "")
				cancel()
				return
			}
			if show[spec.Name] {
				a.show.Set("node "+spec.Name, "booting", "")
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if a.noWait {
		return nil
	}
	return a.waitJoined(ctx, names, show, reports)
}

// waitJoined waits until every named node has registered its machine.
func (a *apply) waitJoined(ctx context.Context, names []string, show map[string]bool, reports <-chan providers.Report) error {
	if len(names) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	waiting := map[string]bool{}
	for _, n := range names {
		waiting[n] = true
	}
	go func() {
		for {
			select {
			case r := <-reports:
				if waiting[r.Node] {
					a.show.Set("node "+r.Node, "failed", "")
					cancel(fmt.Errorf("node %s: %w", r.Node, r.Err))
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	seen := map[string]bool{}
	// A provider may register a node's machine under another name (aws:
	// its instance id, all that an instance of a group knows at boot).
	nodeOf := map[string]string{}
	for n := range waiting {
		nodeOf[machineNameOf(a.t, n)] = n
	}
	cli, err := a.client(ctx)
	if err == nil {
		_, err = registry.WaitFor(ctx, cli, func(ms []registry.Machine) bool {
			for _, m := range ms {
				if n, ok := nodeOf[m.Name]; ok && !seen[n] {
					seen[n] = true
					if show[n] {
						a.show.Set("node "+n, "joined", fmt.Sprintf("machine %.8s…", m.ID))
					}
				}
			}
			return len(seen) == len(waiting)
		})
	}
	if err == nil {
		return nil
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
		return cause
	}
	if ctx.Err() == nil {
		return err // not a timeout: the cluster refused us
	}
	var missing []string
	for n := range waiting {
		if !seen[n] {
			missing = append(missing, n)
		}
	}
	slices.Sort(missing)
	return fmt.Errorf("%s did not join within %s (%w); %s; re-run `provision up` to retry",
		strings.Join(missing, ", "), a.timeout, err, a.t.logHint())
}

// client is the admin client, connected on first use (after the first
// members are launched).
func (a *apply) client(ctx context.Context) (*clientv3.Client, error) {
	if a.cli != nil {
		return a.cli, nil
	}
	cli, err := a.c.connect(ctx)
	if err != nil {
		return nil, err
	}
	a.cli = cli
	return cli, nil
}

// remove takes a node out of the cluster and off its provider: its etcd
// membership first (so the quorum never counts a machine that is gone), a
// client promoted in its place, its subnet back to the pool, its
// registration dropped (its units move), and only then the machine. The
// state forgets it last, so a run killed half-way finds it again.
func (a *apply) remove(ctx context.Context, name string) error {
	c := a.c
	a.show.Set("node "+name, "deleting", "")
	n := c.state.Node(name)
	if n == nil {
		// Found live, never recorded: nothing of it is in etcd.
		if err := a.t.Terminate(ctx, name); err != nil {
			return err
		}
		a.show.Set("node "+name, "deleted", "")
		return nil
	}
	// Bounded twice: the promotion wait inside has its own limit.
	rctx, cancel := context.WithTimeout(ctx, 2*a.timeout)
	defer cancel()
	// With --no-wait there is no etcd to leave: the machines boot nothing.
	if !a.noWait {
		if err := a.leave(rctx, *n); err != nil {
			return err
		}
	}
	if err := a.t.Terminate(ctx, name); err != nil {
		return err
	}
	c.state.Remove(name)
	if err := c.dir.Save(c.state); err != nil {
		return err
	}
	a.show.Set("node "+name, "deleted", "")
	return nil
}

// replace brings up the node's replacement, waits until it has joined and
// is healthy, and only then removes the node.
//
// The node being replaced holds a slot of the cluster's reboot semaphore
// (locksmith's, `clusterctl lock`) from before its replacement is made
// until it is gone, so that replacements, and anything else that takes
// the semaphore, never have more machines down than it allows. A run that
// dies holding it finds it again: a slot is held by name.
func (a *apply) replace(ctx context.Context, ch plan.Change) error {
	release, err := a.rebootSlot(ctx, ch.Name)
	if err != nil {
		return err
	}
	if a.c.state.Node(ch.Replacement) == nil {
		if err := a.record(ch.Replacement, ch.Group, ch.Name); err != nil {
			return err
		}
	}
	if err := a.launch(ctx, []string{ch.Replacement}, []string{ch.Replacement}); err != nil {
		return err
	}
	if err := a.healthy(ctx, *a.c.state.Node(ch.Replacement)); err != nil {
		return err
	}
	if err := a.remove(ctx, ch.Name); err != nil {
		return err
	}
	return release()
}

// rebootSlot takes a slot of the reboot semaphore for replacing node,
// waiting (up to the run's timeout) while others hold every slot, and
// returns its release.
func (a *apply) rebootSlot(ctx context.Context, node string) (func() error, error) {
	cli, err := a.client(ctx)
	if err != nil {
		return nil, err
	}
	holder := "provision/" + node
	if s, err := rebootlock.Get(ctx, cli); err == nil && len(s.Holders) >= s.Max && !slices.Contains(s.Holders, holder) {
		a.show.Set("node "+node, "waiting", "for a reboot slot, held by "+strings.Join(s.Holders, ", "))
	}
	wctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	if err := rebootlock.Acquire(wctx, cli, holder); err != nil {
		return nil, fmt.Errorf("replacing %s: no reboot slot within %s (%w); `clusterctl lock` shows who holds them", node, a.timeout, err)
	}
	return func() error { return rebootlock.Unlock(context.WithoutCancel(ctx), cli, holder) }, nil
}

// healthy waits until a member's etcd answers as part of the cluster; a
// client is healthy once it has joined.
func (a *apply) healthy(ctx context.Context, n state.Node) error {
	if n.Role != state.Member {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	cli, err := a.client(ctx)
	if err != nil {
		return err
	}
	// Where nodes elect their own role at boot (aws: a replacement finds
	// every voter slot taken, by the node it replaces among others), the
	// registration says what the node became: a client is healthy once
	// joined, and the removal of the node it replaces promotes a client
	// in its place.
	ms, _, err := registry.List(ctx, cli)
	if err != nil {
		return err
	}
	if i := slices.IndexFunc(ms, func(m registry.Machine) bool { return m.Name == machineNameOf(a.t, n.Name) }); i >= 0 && !ms[i].Member {
		a.c.state.Node(n.Name).Role = state.Client
		a.show.Set("node "+n.Name, "healthy", "etcd client")
		return a.c.dir.Save(a.c.state)
	}
	url := store.ClientURL(n.IP.AsSlice(), 0)
	for {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.Status(sctx, url)
		scancel()
		if err == nil && st.Leader != 0 && !st.IsLearner {
			a.show.Set("node "+n.Name, "healthy", "etcd member")
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s joined but its etcd member is not healthy within %s (%v); the node it replaces is kept; re-run `provision up` to retry", n.Name, a.timeout, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// machines lists the cluster's machines once the run is over.
func (a *apply) machines(ctx context.Context) ([]registry.Machine, error) {
	cli, err := a.c.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ms, _, err := registry.List(ctx, cli)
	return ms, err
}

// nodeNames lists the state's nodes.
func (c *cluster) nodeNames() []string {
	out := make([]string, 0, len(c.state.Nodes))
	for _, n := range c.state.Nodes {
		out = append(out, n.Name)
	}
	return out
}

// used lists the addresses the state's nodes have.
func used(nodes []state.Node) []netip.Addr {
	var out []netip.Addr
	for _, n := range nodes {
		out = append(out, n.IP)
	}
	return out
}
